"""``hparse serve`` against 127.0.0.1: a real uvicorn process with the shipped default model.

A burst of 200 concurrent requests with (downscaled) example photos must all succeed with the labels of
``hparse.load("default").predict``, leave the server's memory flat, and malformed requests must each get a 4xx
with a message while the server stays healthy. Plus the batcher on its own, in-process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

import hparse  # noqa: E402
from tests.conftest import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTO_LONG_SIDE = 160


def start_server(log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``hparse serve`` in a subprocess on a free local port, logging to ``log``; returns once ``/health`` answers."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hparse.cli", "serve", "--port", str(port), "--log-level",
                                 "warning", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not come up within 120 s")


def assert_stopped_gracefully(proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """After SIGTERM: the service's shutdown ran (its last log line) and the process ended by the signal
    (uvicorn re-raises it after a graceful shutdown) or with status 0."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code in (0, -signal.SIGTERM), code
    assert "hparse service stopped after" in log.read_text(errors="replace")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled_rss(url: str, pid: int, photo: bytes) -> int:
    """The server's RSS once idle after one single-image request: the working memory of the last forward pass
    stays allocated until the next one (about 55 MiB for a batch of 8 here, little for one image), so without
    it the figure would depend on how full the burst's last batch happened to be."""
    assert httpx.post(f"{url}/v1/parse", content=photo, timeout=60).status_code == 200
    time.sleep(0.5)                                  # idle: the service hands freed memory back
    return rss_bytes(pid)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, url = start_server(log, "--threads", "2")
    yield proc, url
    proc.send_signal(signal.SIGTERM)
    assert_stopped_gracefully(proc, log)


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, bytes]]:
    """The example photos, downscaled to a long side of 160 px, as JPEG bytes."""
    out = []
    for path in sorted((REPO / "examples").glob("*.jpg")):
        im = Image.open(path).convert("RGB")
        im.thumbnail((PHOTO_LONG_SIDE, PHOTO_LONG_SIDE))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append((path.name, buf.getvalue()))
    return out


@pytest.fixture(scope="module")
def parser():
    return hparse.load("default")


@pytest.fixture(scope="module")
def references(photos, parser) -> list[np.ndarray]:
    return [parser.predict(Image.open(io.BytesIO(data))) for _, data in photos]


def test_long_side_and_tta_options_match_the_api(server, photos, parser):
    _, url = server
    image = Image.open(io.BytesIO(photos[1][1]))

    def served(**params) -> np.ndarray:
        r = httpx.post(f"{url}/v1/parse", params={"outputs": "label", **params}, content=photos[1][1], timeout=60)
        assert r.status_code == 200, r.text
        return np.asarray(Image.open(io.BytesIO(r.content)))

    default = parser.predictor.long_side
    try:
        parser.predictor.long_side = 192
        np.testing.assert_array_equal(served(long_side=192), parser.predict(image))
    finally:
        parser.predictor.long_side = default
    np.testing.assert_array_equal(served(tta="true"), hparse.load("default", tta=True).predict(image))


async def burst(url: str, photos, n: int) -> tuple[list[httpx.Response], int]:
    """``n`` concurrent requests (photos in turn, multipart and raw bodies alternating) for the label PNG, and
    how many of them had been answered when a ``/health`` call sent among them was (the event loop must stay
    responsive: fewer than ``n``)."""
    answered = 0
    limits = httpx.Limits(max_connections=n + 1, max_keepalive_connections=n + 1)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(i: int):
            nonlocal answered
            name, data = photos[i % len(photos)]
            if i % 2:
                r = await client.post("/v1/parse", params={"outputs": "label"}, content=data,
                                      headers={"content-type": "image/jpeg"})
            else:
                r = await client.post("/v1/parse", params={"outputs": "label"},
                                      files={"file": (name, data, "image/jpeg")})
            answered += 1
            return r

        async def health() -> int:
            await asyncio.sleep(1.0)
            assert (await client.get("/health")).status_code == 200
            return answered

        *responses, answered_before_health = await asyncio.gather(*(one(i) for i in range(n)), health())
        return responses, answered_before_health


def test_burst_of_200_matches_predict_and_memory_stays_flat(server, photos, references):
    proc, url = server
    warm, _ = asyncio.run(burst(url, photos, 64))
    assert all(r.status_code == 200 for r in warm)
    rss_warm = settled_rss(url, proc.pid, photos[0][1])
    start = time.monotonic()
    responses, answered_before_health = asyncio.run(burst(url, photos, 200))
    seconds = time.monotonic() - start
    rss_after = settled_rss(url, proc.pid, photos[0][1])
    assert [r.status_code for r in responses] == [200] * 200
    for i, r in enumerate(responses):
        assert r.headers["content-type"] == "image/png"
        label = np.asarray(Image.open(io.BytesIO(r.content)))
        np.testing.assert_array_equal(label, references[i % len(photos)], err_msg=f"request {i}")
    assert abs(rss_after - rss_warm) <= 0.10 * rss_warm, (rss_warm, rss_after)
    assert answered_before_health < 200, "/health was answered only after the whole burst"
    health = httpx.get(f"{url}/health").json()
    assert health["images"] >= 264 and health["batches"] < health["images"], health  # requests were batched
    print(f"\n200 requests in {seconds:.1f} s (/health answered after {answered_before_health} of them); "
          f"RSS {rss_warm / 2**20:.0f} MiB after warm-up, "
          f"{rss_after / 2**20:.0f} MiB after the burst; {health['batches']} batches for {health['images']} images")


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, format="PNG")   # 400 Mpx of zeros in ~0.4 MB
    return buf.getvalue()


def _big_header_png() -> bytes:
    """A valid small PNG whose header claims 5000x5000 (25 Mpx, above the 12 Mpx limit)."""
    buf = io.BytesIO()
    Image.new("RGB", (5000, 5000)).save(buf, format="PNG")
    return buf.getvalue()


def malformed(photo: bytes) -> list[tuple[str, dict, int]]:
    """(what, request keyword arguments, expected status) for 20 bad requests."""
    raw = {"headers": {"content-type": "application/octet-stream"}}
    return [
        ("empty body", {"content": b"", **raw}, 400),
        ("text", {"content": b"hello, I am not an image", **raw}, 415),
        ("html", {"content": b"<html><body>hi</body></html>", "headers": {"content-type": "text/html"}}, 415),
        ("truncated JPEG", {"content": photo[: len(photo) // 3], **raw}, 400),
        ("JPEG header only", {"content": photo[:20], **raw}, 415),
        ("decompression bomb", {"content": _bomb(), **raw}, 413),
        ("too many pixels", {"content": _big_header_png(), **raw}, 413),
        ("upload too large", {"content": b"\xff" * (21 * 1024 * 1024), **raw}, 413),
        ("unknown model", {"params": {"model": "nope"}, "content": photo, **raw}, 404),
        ("long_side not a number", {"params": {"long_side": "big"}, "content": photo, **raw}, 422),
        ("long_side a float", {"params": {"long_side": "12.5"}, "content": photo, **raw}, 422),
        ("long_side out of range", {"params": {"long_side": "100000"}, "content": photo, **raw}, 400),
        ("tta not a boolean", {"params": {"tta": "maybe"}, "content": photo, **raw}, 422),
        ("unknown option", {"params": {"colour": "red"}, "content": photo, **raw}, 422),
        ("unknown output", {"params": {"outputs": "label,video"}, "content": photo, **raw}, 400),
        ("unknown palette", {"params": {"palette": "rainbow"}, "content": photo, **raw}, 422),
        ("multipart without file", {"files": {"image": ("x.jpg", photo, "image/jpeg")}}, 400),
        ("multipart empty file", {"files": {"file": ("x.jpg", b"", "image/jpeg")}}, 400),
        ("empty multipart body", {"content": b"--xx--\r\n",
                                  "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 400),
        ("random bytes", {"content": np.random.default_rng(0).bytes(5000), **raw}, 415),
    ]


def test_malformed_requests_get_4xx_with_a_message(server, photos, references):
    _, url = server
    cases = malformed(photos[0][1])
    assert len(cases) == 20
    with httpx.Client(base_url=url, timeout=60) as client:
        for what, kwargs, status in cases:
            r = client.post("/v1/parse", **kwargs)
            assert r.status_code == status, (what, r.status_code, r.text)
            body = r.json()
            assert body["status"] == status and len(body["error"]) > 10, (what, body)
            assert client.get("/health").status_code == 200, what
        ok = client.post("/v1/parse", params={"outputs": "label"}, content=photos[0][1])
        assert ok.status_code == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(ok.content))), references[0])


def test_outputs_models_docs_and_page(server, photos, references):
    _, url = server
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/parse", params={"outputs": "label,overlay,masks,json"},
                        files={"file": photos[0]})
        body = r.json()
        present = sorted(int(c) for c in np.unique(references[0]))
        assert [c["id"] for c in body["classes"]] == present
        assert sum(c["pixels"] for c in body["classes"]) == references[0].size
        assert sorted(int(k) for k in body["masks_png"]) == [c for c in present if c != 0]
        assert {"label_png", "overlay_jpeg"} <= set(body)
        overlay = client.post("/v1/parse", params={"outputs": "overlay"}, content=photos[0][1])
        assert overlay.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(overlay.content)).width > references[0].shape[1]   # the legend panel
        voc = client.post("/v1/parse", params={"outputs": "label", "palette": "voc"}, content=photos[0][1])
        assert Image.open(io.BytesIO(voc.content)).getpalette()[3:6] == [128, 0, 0]
        models = client.get("/v1/models").json()
        assert models[0]["name"] == "default" and models[0]["label_set"] == "ccp15"
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/parse", "/v1/models", "/health"} <= set(paths)
        assert "multipart/form-data" in paths["/v1/parse"]["post"]["requestBody"]["content"]
        assert 'id="legend"' in client.get("/").text
        assert client.get("/static/app.js").status_code == 200


def test_instance_model_serves_the_people_as_parse_does(tmp_path):
    """An instance model: the label is the global parsing of the people scoring at least parse's threshold, the
    JSON lists those people (parse's sidecar entries) and the overlay is drawn; every labelled pixel is a person's."""
    log = tmp_path / "serve.log"
    proc, url = start_server(log, "--threads", "2", "--model", "aiparsing_cpu_ccpmulti")
    try:
        photo = (REPO / "examples" / "ccp_0002.jpg").read_bytes()
        r = httpx.post(f"{url}/v1/parse", params={"outputs": "json,overlay,label"}, content=photo, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert_stopped_gracefully(proc, log)
    assert body["min_score"] == pytest.approx(0.3)
    persons = body["persons"]
    assert len(persons) >= 1 and all(p["score"] >= 0.3 for p in persons)
    assert all(len(p["box"]) == 4 and all(isinstance(v, float) for v in p["box"]) for p in persons)
    assert all("person_map" not in p for p in persons)
    label = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["label_png"]))))
    assert int(np.count_nonzero(label)) == sum(sum(p["pixels"].values()) for p in persons) > 0
    assert sum(c["pixels"] for c in body["classes"] if c["id"] != 0) == int(np.count_nonzero(label))
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_jpeg"]))).width > label.shape[1]


def test_graceful_shutdown_finishes_requests_in_flight(photos, tmp_path):
    proc, url = start_server(tmp_path / "serve.log", "--threads", "1")
    try:
        async def during_shutdown():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                pending = [asyncio.ensure_future(client.post("/v1/parse", content=photos[0][1])) for _ in range(6)]
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*pending, return_exceptions=True)

        results = asyncio.run(during_shutdown())
        done = [r for r in results if isinstance(r, httpx.Response)]
        assert done and all(r.status_code in (200, 503) for r in done), results
        assert any(r.status_code == 200 for r in done)
        assert_stopped_gracefully(proc, tmp_path / "serve.log")
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------------------- the batcher alone

def test_batcher_groups_by_setting_and_survives_a_failing_batch():
    from hparse.service.batching import Batcher
    from hparse.service.errors import ApiError

    calls = []

    def run(setting, images):
        calls.append((setting, len(images)))
        if setting == "bad":
            raise RuntimeError("boom")
        return [int(im[0, 0, 0]) for im in images]

    async def main():
        b = Batcher(run, max_batch=4, max_batch_pixels=10**9, max_wait_s=0.05, max_queue=100,
                    max_queued_pixels=10**9)
        b.start()
        img = lambda v: np.full((2, 2, 3), v, np.uint8)  # noqa: E731
        good = [b.submit("s", img(i)) for i in range(6)] + [b.submit("other", img(9))]
        bad = b.submit("bad", img(1))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        after = await b.submit("s", img(7))
        await b.close()
        return results, after

    results, after = asyncio.run(main())
    assert results[:7] == [0, 1, 2, 3, 4, 5, 9]
    assert isinstance(results[7], ApiError) and results[7].status == 500 and "boom" in results[7].message
    assert after == 7
    assert max(n for _, n in calls) == 4 and ("s", 4) in calls     # batched, within max_batch


def test_batcher_refuses_when_the_queue_is_full():
    from hparse.service.batching import Batcher
    from hparse.service.errors import ApiError

    async def main():
        b = Batcher(lambda s, ims: (time.sleep(0.2), [0] * len(ims))[1], max_batch=1, max_batch_pixels=10**9,
                    max_wait_s=0.0, max_queue=2, max_queued_pixels=10**9)
        b.start()
        jobs = [asyncio.ensure_future(b.submit("s", np.zeros((2, 2, 3), np.uint8))) for _ in range(6)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await b.close()
        return results

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, ApiError)]
    assert refused and all(r.status == 503 for r in refused)
    assert results.count(0) >= 2


def test_serve_cli_help_and_missing_model(tmp_path):
    from typer.testing import CliRunner

    from hparse.cli import app

    res = CliRunner().invoke(app, ["serve", "-h"])
    assert res.exit_code == 0 and "/v1/parse" in res.output
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "hparse.cli", "serve", "--port", str(free_port()), "--model",
                          str(tmp_path / "missing.pt")], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "missing.pt" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
