"""Requests that arrive together share forward passes: a bounded queue, a bounded wait, and one inference thread
so the event loop stays free to accept, decode and answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import ApiError

log = logging.getLogger("hparse.service")


@dataclass
class Job:
    setting: Hashable       # jobs with equal settings may run in one batch
    image: np.ndarray
    future: asyncio.Future = field(repr=False)

    @property
    def pixels(self) -> int:
        return int(self.image.shape[0] * self.image.shape[1])


class Batcher:
    """Collects jobs for up to ``max_wait_s`` (or until ``max_batch`` images / ``max_batch_pixels``), groups
    them by setting and runs ``run(setting, images) -> results`` in a single worker thread. A failing
    batch fails its own requests only; the worker goes on."""

    def __init__(self, run: Callable[[Hashable, list[np.ndarray]], list], max_batch: int, max_batch_pixels: int,
                 max_wait_s: float, max_queue: int, max_queued_pixels: int):
        self.run = run
        self.max_batch, self.max_batch_pixels, self.max_wait_s = max_batch, max_batch_pixels, max_wait_s
        self.max_queue, self.max_queued_pixels = max_queue, max_queued_pixels
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.queued_pixels = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hparse-inference")
        self.task: asyncio.Task | None = None
        self.batches = self.images = 0
        self.running: list[Job] = []

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve(), name="hparse-batcher")

    async def submit(self, setting: Hashable, image: np.ndarray):
        """The result for one image; 503 when the queue is full or the service is stopping."""
        if self.task is None or self.task.done():
            raise ApiError(503, "the service is shutting down")
        job = Job(setting, image, asyncio.get_running_loop().create_future())
        if self.queue.qsize() >= self.max_queue or self.queued_pixels + job.pixels > self.max_queued_pixels:
            raise ApiError(503, f"server busy: {self.queue.qsize()} images waiting; retry shortly")
        self.queued_pixels += job.pixels
        self.queue.put_nowait(job)
        return await job.future

    def _take(self, job: Job) -> Job:
        self.queued_pixels -= job.pixels
        return job

    async def _collect(self) -> list[Job]:
        """The next jobs: the first one waited for, then what arrives within ``max_wait_s``, within the bounds."""
        jobs = [self._take(await self.queue.get())]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        pixels = jobs[0].pixels
        while len(jobs) < self.max_batch and pixels < self.max_batch_pixels:
            try:
                job = self.queue.get_nowait() if not self.queue.empty() else \
                    await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
            jobs.append(self._take(job))
            pixels += job.pixels
        return jobs

    async def _serve(self) -> None:
        while True:
            jobs = await self._collect()
            for group in _groups(jobs, self.max_batch_pixels):
                await self._run_group(group)

    async def _run_group(self, group: list[Job]) -> None:
        group = [j for j in group if not j.future.done()]           # clients that went away
        if not group:
            return
        loop = asyncio.get_running_loop()
        self.running = group
        try:
            results = await loop.run_in_executor(self.executor, self.run, group[0].setting,
                                                 [j.image for j in group])
        except Exception as e:  # noqa: BLE001 - one failing batch must not stop the service
            log.exception("inference failed on a batch of %d", len(group))
            for j in group:
                if not j.future.done():
                    j.future.set_exception(ApiError(500, f"inference failed: {e.__class__.__name__}: {e}"))
            return
        self.batches, self.images = self.batches + 1, self.images + len(group)
        for j, r in zip(group, results):
            if not j.future.done():
                j.future.set_result(r)

    async def close(self) -> None:
        """Stop taking work, fail what is still queued with 503, let the running batch finish."""
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        left = self.running + [self._take(self.queue.get_nowait()) for _ in range(self.queue.qsize())]
        for job in left:
            if not job.future.done():
                job.future.set_exception(ApiError(503, "the service is shutting down"))
        self.executor.shutdown(wait=True)


def _groups(jobs: list[Job], max_pixels: int) -> list[list[Job]]:
    """Jobs split by setting in arrival order, each group within ``max_pixels`` (one image at least)."""
    by_setting: dict[Hashable, list[list[Job]]] = {}
    for job in jobs:
        chunks = by_setting.setdefault(job.setting, [[]])
        if chunks[-1] and sum(j.pixels for j in chunks[-1]) + job.pixels > max_pixels:
            chunks.append([])
        chunks[-1].append(job)
    return [chunk for chunks in by_setting.values() for chunk in chunks]
