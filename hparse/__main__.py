"""``python -m hparse`` (and ``torchrun -m hparse``): the hparse command."""

from .cli import main

main()
