"""CUDA graphs for a training step over static buffers, with an eager fallback that says why it was taken."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger("rdvae")

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as in PyTorch's whole-network capture recipe


def graph_unavailable_reason(device: torch.device) -> str | None:
    """Why a step on `device` cannot be captured in a CUDA graph, or None when it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run trains on {device.type}"
    if not torch.cuda.is_available():
        return "CUDA graphs need CUDA, which this torch build or machine lacks"
    return None


class GraphedStep:
    """Runs `step()` — which reads and writes only tensors it keeps (static buffers, parameters, optimiser state)
    — eagerly for the first calls, then captures it once and replays the graph on every later call.

    The caller copies each batch into the step's input buffers before the call and reads its outputs after.
    Where capture is impossible (not CUDA) or fails, every call runs `step()` eagerly and one warning says why;
    `reason` keeps that text (None while graphs are in use).
    """

    def __init__(self, step: Callable[[], None], device: torch.device, what: str = "training step") -> None:
        self._step = step
        self._what = what
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._stream: torch.cuda.Stream | None = None
        self.reason = graph_unavailable_reason(device)
        if self.reason is not None:
            logger.warning("cuda_graph: %s; the %s runs eagerly", self.reason, what)
        else:
            self._stream = torch.cuda.Stream(device=device)

    @property
    def graphed(self) -> bool:
        """True once the step replays a captured graph."""
        return self._graph is not None

    def __call__(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        if self.reason is not None:
            self._step()
            return
        self._calls += 1
        if self._calls <= WARMUP_STEPS:
            self._on_side_stream(self._step)
            return
        self._capture()
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step()

    def _on_side_stream(self, step: Callable[[], None]) -> None:
        assert self._stream is not None
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            step()
        torch.cuda.current_stream().wait_stream(self._stream)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                self._step()
        except RuntimeError as error:
            # Capture runs no kernel, so the state is as before the capture: the eager step is still valid.
            self.reason = f"capture failed ({error})"
            logger.warning("cuda_graph: %s; the %s runs eagerly", self.reason, self._what)
            torch.cuda.synchronize()
            return
        self._graph = graph
