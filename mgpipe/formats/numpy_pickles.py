"""The numpy constructors a third-party torch checkpoint's pickle may use. pyskl, MMAction2 and
mmpose checkpoints keep numpy values in their meta (scores, dataset meta: sigmas, colours);
torch's restricted unpickler (`weights_only=True`) refuses them unless these are allowed, and
allowing these builds arrays, scalars and dtypes only: arbitrary pickled objects stay refused.
Imports numpy only (the mmpose backend runs it under its side environment's interpreter).
"""

from __future__ import annotations


def numpy_globals() -> list:
    """The array, scalar and dtype constructors of this numpy (1.x or 2.x), for
    torch.serialization.safe_globals / add_safe_globals."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None))
              if n.endswith("DType") and n not in ("ObjectDType", "VoidDType")]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]
