"""``unwrap``: the user's own network inside the wrappers training puts around it.

Training may wrap a network twice: ``torch.compile`` returns an ``OptimizedModule`` holding the
network as ``_orig_mod``, and DDP a ``DistributedDataParallel`` holding it as ``module``. Both
prefix the keys of ``state_dict()`` (``_orig_mod.``, ``module.``), so a checkpoint of the wrapper
would not load into a plain network, nor export. Every reader and writer of network state sees
through them with this one function. FSDP2's ``fully_shard`` and ``nn.Module.compile`` change
the network in place and keep its keys: such a network is returned as it is.
"""

from __future__ import annotations

import sys
from typing import cast

from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["unwrap"]


def _compiled_wrapper_class() -> type | None:
    """torch.compile's ``OptimizedModule``, if dynamo was ever imported (else none can exist).

    Importing ``torch._dynamo`` takes seconds; a process that never compiled never pays it here.
    """
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    wrapper = getattr(eval_frame, "OptimizedModule", None)
    return wrapper if isinstance(wrapper, type) else None


def unwrap(module: nn.Module) -> nn.Module:
    """The user's network inside DDP and ``torch.compile`` wrappers, in any nesting.

    Args:
        module: a network, possibly ``DistributedDataParallel(torch.compile(net))`` or
            ``torch.compile(DistributedDataParallel(net))``.

    Returns:
        The innermost network, whose ``state_dict()`` keys are those of the plain network;
        ``module`` itself when it is not wrapped (FSDP2 networks included).
    """
    compiled = _compiled_wrapper_class()
    while True:
        if isinstance(module, DistributedDataParallel):
            module = module.module
        elif compiled is not None and isinstance(module, compiled):
            module = cast("nn.Module", module._orig_mod)
        else:
            return module
