"""Reading one .npy array from a file anyone could have made (a label, a cached teacher map): the one home of that
rule. The file's first bytes say what it is before numpy sees it, so an .npz archive, a pickle or other bytes named
.npy get one line saying so; numpy never unpickles (allow_pickle=False), and its own advice to load a file unsafely
never reaches the user (docs/safety.md, "Inputs and outputs")."""

import os
import stat

import numpy as np

from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.safety import first_line

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"  # an .npz archive
PICKLE_PROTOCOL = b"\x80"  # pickle protocol 2 and later (torch.save, pickle.dump)
UNSAFE_ADVICE = ("allow_pickle", "pickle.load", "weights_only")


class ArrayFileError(PieaError, ValueError):
    """A file that is not one numeric .npy array; the message names the file and what it is instead (``reason``)."""

    exit_code = EXIT_USAGE

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}; expected a .npy array")
        self.reason = reason


def what_it_is(head):
    """The kind of file whose first bytes are ``head``, in words, when it is no .npy array (None when it is one)."""
    if head.startswith(NPY_MAGIC):
        return None
    if head.startswith(ZIP_MAGIC):
        return "an .npz archive (zipped arrays), not one .npy array"
    if head.startswith(PICKLE_PROTOCOL) or head[:1] in (b"(", b"]", b"}", b"c"):
        return "a Python pickle, not a .npy array (pickles are never loaded: they can run code)"
    return "not a .npy array file (no NumPy header)"


def read_npy(path):
    """The array in the .npy file at ``path`` (a regular file); raises ArrayFileError in one line naming the file for
    anything else: another kind of file, an object (pickled) array, a truncated or corrupt one."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ArrayFileError(path, "not a regular file")
            kind = what_it_is(f.read(len(NPY_MAGIC)))
            if kind:
                raise ArrayFileError(path, kind)
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except ArrayFileError:
        raise
    except ValueError as e:
        if any(advice in str(e) for advice in UNSAFE_ADVICE):  # numpy: an object array, which only a pickle holds
            raise ArrayFileError(path, "holds Python objects (a pickled object array), which are never loaded") from e
        raise ArrayFileError(path, f"unreadable ({safe_reason(e)})") from e
    except (OSError, EOFError, MemoryError) as e:
        reason = getattr(e, "strerror", None) or safe_reason(e)
        raise ArrayFileError(path, f"unreadable ({reason})") from e


def safe_reason(error):
    """The first line of a library's error, or only its type where that line advises loading unsafely."""
    text = first_line(error, 120)
    return type(error).__name__ if any(advice in text for advice in UNSAFE_ADVICE) else text
