"""Ctrl-C while a tool is still importing (torch, matplotlib: the first seconds) ends it with exit code 130 and one
line, never a KeyboardInterrupt traceback.

Each script calls ``quiet_interrupts(prog)`` first, before its slow imports, when run as a program (the console
commands do it in pieanet/commands.py); ``cli.run`` and train_wavelet's ``main`` call ``interrupts_raise()`` when the
work starts, from where Ctrl-C is a KeyboardInterrupt that they turn into their own message and exit code 130. This
module imports nothing slow.
"""

import os
import signal

from pieanet.utils.errors import EXIT_INTERRUPTED  # imports nothing slow and nothing of the project


def quiet_interrupts(prog):
    """Until interrupts_raise: SIGINT prints '<prog>: interrupted while starting' and exits 130 at once."""

    def handler(signum, frame):
        try:
            os.write(2, f"\n{prog}: interrupted while starting; nothing was done\n".encode())
        finally:
            os._exit(EXIT_INTERRUPTED)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Python's handling
        pass


def interrupts_raise():
    """SIGINT raises KeyboardInterrupt again (Python's default), where a handler of quiet_interrupts was set."""
    try:
        if getattr(signal.getsignal(signal.SIGINT), "__qualname__", "").startswith("quiet_interrupts"):
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:
        pass


def passive_waits():
    """OpenMP threads (torch's intra-op pool) sleep when they run out of work instead of spinning for a while: on
    make_heatmap's overlap of threads (numpy and Pillow on one, torch on another) a spinning torch thread takes the
    core the other needs (measured on 8 photos of 12 MP, 2 threads, a busy machine: 47 s and 21 s of CPU spinning,
    21 s and 9 s passive). Read by the OpenMP runtime when torch starts it, so called before torch is imported; a
    value the user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


__all__ = ["quiet_interrupts", "interrupts_raise", "passive_waits"]
