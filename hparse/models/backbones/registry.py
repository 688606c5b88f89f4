"""The backbone registry: ``@BACKBONES.register("name")`` on a factory taking the backbone's options."""

from ...registry import Registry

BACKBONES = Registry("backbone")
