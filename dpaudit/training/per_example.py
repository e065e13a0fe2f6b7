"""Per-example gradients of K models at once, each on its own rows of data.

Two engines compute ``{name: [K, B, *param_shape]}``, the cross-entropy
gradient of every example of every model, for parameters stacked over a
leading model dimension:

* :class:`LayerwiseGrads`, for ``nn.Sequential`` models made of ``Conv2d``
  (groups 1, dilation 1, zero padding), ``Linear``, ``Tanh``, ``ReLU``,
  ``MaxPool2d`` (no padding or dilation) and ``Flatten`` (every model in
  :mod:`dpaudit.training.models`). It runs the forward pass as batched matrix
  products over the K models on unfolded (im2col) inputs, back-propagates by
  hand and forms each example's weight gradient from the saved unfolded input
  and the back-propagated error, the method of Opacus's grad samplers (Yousefpour
  et al. 2021) applied to K models at once, which no library offers. Every
  intermediate lives in a buffer that is reused from step to step: on a CPU,
  allocating the hundreds of megabytes of a step afresh costs more than the
  arithmetic (every new large block is page-faulted in). Activations are kept
  channels-last, where an unfolded patch is a run of contiguous memory and
  PyTorch's max-pooling kernels are several times faster than on the
  channels-first layout. Its forward pass alone (``logits``) evaluates the K
  models (test accuracy, input canaries' losses).
* :class:`FuncGrads`, for any other model: ``vmap`` over models of
  ``vmap(grad(loss))`` over examples (``torch.func``).

:func:`per_example_engine` picks the first when the model allows it. Both
return tensors that the next call overwrites (:class:`LayerwiseGrads`) or
fresh ones (:class:`FuncGrads`); callers copy what they keep.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


class Buffers:
    """Named scratch tensors reused across calls: one flat storage per name, grown on demand."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._store: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (contents undefined) backed by the storage named ``name``."""
        n = 1
        for s in shape:
            n *= int(s)
        flat = self._store.get(name)
        if flat is None or flat.numel() < n or flat.dtype != dtype:
            cap = max(n, int(1.25 * flat.numel()) if flat is not None and flat.dtype == dtype else 0)
            flat = torch.empty(cap, dtype=dtype, device=self.device)
            self._store[name] = flat
        return flat[:n].view(*shape)

    def release(self) -> None:
        """Forget every storage (whoever still holds one keeps it); the next ``get`` allocates anew."""
        self._store = {}

    def storages(self) -> set[int]:
        """The data pointers of the buffers' storages (to see whether someone holds on to one)."""
        return {b.untyped_storage().data_ptr() for b in self._store.values()}


# ----------------------------------------------------------------------------
# The layer-wise engine


class _Layer:
    names: tuple[str, ...] = ()  # parameter names (as in named_parameters) this layer owns

    def forward(self, h: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, g: torch.Tensor, params: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                 need_input_grad: bool) -> torch.Tensor | None:
        raise NotImplementedError


class _Conv(_Layer):
    def __init__(self, prefix: str, m: nn.Conv2d, buf: Buffers) -> None:
        self.prefix, self.buf = prefix, buf
        self.cout, self.cin = m.out_channels, m.in_channels
        self.kh, self.kw = m.kernel_size
        self.sh, self.sw = m.stride
        self.ph, self.pw = m.padding
        self.bias = m.bias is not None
        self.names = (f"{prefix}weight",) + ((f"{prefix}bias",) if self.bias else ())

    def forward(self, h, params):
        # h: [K, B, H, W, C], or [1, B, H, W, C] when every model sees the same inputs (then the
        # patches are unfolded once and all K models' filters apply in one matrix product).
        K = params[self.names[0]].shape[0]
        Kx, B, H, W, C = h.shape
        ph, pw = self.ph, self.pw
        Hp, Wp = H + 2 * ph, W + 2 * pw
        Ho, Wo = (Hp - self.kh) // self.sh + 1, (Wp - self.kw) // self.sw + 1
        if ph or pw:
            hp = self.buf.get(self.prefix + "pad", (Kx, B, Hp, Wp, C))
            hp.zero_()
            hp[:, :, ph : ph + H, pw : pw + W].copy_(h)
        else:
            hp = h if h.is_contiguous() else h.contiguous()
        s = hp.stride()
        patches = hp.as_strided(
            (Kx, B, Ho, Wo, self.kh, self.kw, C), (s[0], s[1], s[2] * self.sh, s[3] * self.sw, s[2], s[3], s[4])
        )
        P = self.buf.get(self.prefix + "unfold", (Kx, B, Ho, Wo, self.kh, self.kw, C))
        P.copy_(patches)
        self.P, self.in_shape, self.out_hw, self.shared = P, (K, B, H, W, C), (Ho, Wo), Kx == 1 and K > 1
        w = params[self.names[0]]  # [K, Cout, Cin, kh, kw]
        self.wt = w.permute(0, 3, 4, 2, 1).reshape(K, self.kh * self.kw * C, self.cout)  # rows in (kh, kw, Cin) order
        z = self.buf.get(self.prefix + "out", (K, B, Ho, Wo, self.cout))
        rows = B * Ho * Wo
        if self.shared:
            zs = self.buf.get(self.prefix + "out-shared", (rows, K * self.cout))
            w_all = self.wt.permute(1, 0, 2).reshape(-1, K * self.cout)
            if self.bias:
                torch.addmm(params[self.names[1]].reshape(1, -1), P.view(rows, -1), w_all, out=zs)
            else:
                torch.mm(P.view(rows, -1), w_all, out=zs)
            z.copy_(zs.view(B, Ho, Wo, K, self.cout).permute(3, 0, 1, 2, 4))
            return z
        Pm = P.view(K, rows, -1)
        if self.bias:
            torch.baddbmm(params[self.names[1]].unsqueeze(1), Pm, self.wt, out=z.view(K, rows, self.cout))
        else:
            torch.bmm(Pm, self.wt, out=z.view(K, rows, self.cout))
        return z

    def backward(self, g, params, out, need_input_grad):
        K, B, H, W, C = self.in_shape
        Ho, Wo = self.out_hw
        L, kk = Ho * Wo, self.kh * self.kw
        gm = g.view(K * B, L, self.cout)
        wout = out[self.names[0]].view(K * B, self.cout, C, self.kh, self.kw)
        # Per-example weight gradients [Cout, L] @ [L, kk·C], rows of the patches in (kh, kw, Cin)
        # order: the parameter's (Cin, kh, kw) order itself when Cin = 1, else permuted after.
        if C == 1:
            target = wout.view(K, B, self.cout, kk)
        else:
            target = self.buf.get(self.prefix + "wgrad", (K, B, self.cout, kk * C))
        if self.shared:
            # One product per model on the shared patches: cheaper than gathering g model-minor.
            Pm = self.P.view(B, L, kk * C)
            for k, gk in enumerate(g.view(K, B, L, self.cout)):
                torch.bmm(gk.transpose(1, 2), Pm, out=target[k])
        else:
            torch.bmm(gm.transpose(1, 2), self.P.view(K * B, L, kk * C), out=target.view(K * B, self.cout, kk * C))
        if C != 1:
            wout.view(K, B, self.cout, C, self.kh, self.kw).permute(0, 1, 2, 4, 5, 3).copy_(
                target.view(K, B, self.cout, self.kh, self.kw, C))
        if self.bias:
            torch.sum(gm, dim=1, out=out[self.names[1]].view(K * B, self.cout))
        if not need_input_grad:
            return None
        if self.shared:  # pragma: no cover - only the first layer sees shared inputs
            raise RuntimeError("no input gradient for inputs shared by the models")
        # Input gradient: the patch gradients, folded back (col2im) onto the padded input.
        dP = self.buf.get(self.prefix + "dunfold", (K, B, Ho, Wo, self.kh, self.kw, C))
        w = params[self.names[0]].permute(0, 1, 3, 4, 2).reshape(K, self.cout, kk * C)
        torch.bmm(g.view(K, B * L, self.cout), w, out=dP.view(K, B * L, kk * C))
        Hp, Wp = H + 2 * self.ph, W + 2 * self.pw
        dh = self.buf.get(self.prefix + "dpad", (K, B, Hp, Wp, C))
        dh.zero_()
        for i in range(self.kh):
            for j in range(self.kw):
                dh[:, :, i : i + self.sh * (Ho - 1) + 1 : self.sh, j : j + self.sw * (Wo - 1) + 1 : self.sw].add_(
                    dP[:, :, :, :, i, j]
                )
        if self.ph or self.pw:
            return dh[:, :, self.ph : self.ph + H, self.pw : self.pw + W]
        return dh


class _Linear(_Layer):
    def __init__(self, prefix: str, m: nn.Linear, buf: Buffers) -> None:
        self.prefix, self.buf = prefix, buf
        self.fin, self.fout = m.in_features, m.out_features
        self.bias = m.bias is not None
        self.names = (f"{prefix}weight",) + ((f"{prefix}bias",) if self.bias else ())

    def forward(self, h, params):
        # h: [K, B, in], or [1, B, in] when every model sees the same inputs (broadcast over models).
        K = params[self.names[0]].shape[0]
        B = h.shape[1]
        self.a = h
        if h.shape[0] != K:
            h = h.expand(K, B, self.fin)
        z = self.buf.get(self.prefix + "out", (K, B, self.fout))
        wt = params[self.names[0]].transpose(1, 2)
        if self.bias:
            torch.baddbmm(params[self.names[1]].unsqueeze(1), h, wt, out=z)
        else:
            torch.bmm(h, wt, out=z)
        return z

    def backward(self, g, params, out, need_input_grad):
        torch.mul(g.unsqueeze(-1), self.a.unsqueeze(-2), out=out[self.names[0]])
        if self.bias:
            out[self.names[1]].copy_(g)
        if not need_input_grad:
            return None
        K, B, _ = g.shape
        da = self.buf.get(self.prefix + "din", (K, B, self.fin))
        torch.bmm(g, params[self.names[0]], out=da)
        return da


class _Tanh(_Layer):
    def __init__(self, prefix: str, buf: Buffers) -> None:
        self.prefix, self.buf = prefix, buf

    def forward(self, h, params):
        self.y = torch.tanh(h, out=self.buf.get(self.prefix + "out", h.shape))
        return self.y

    def backward(self, g, params, out, need_input_grad):
        d = self.buf.get(self.prefix + "d", self.y.shape)
        return torch.ops.aten.tanh_backward.grad_input(g, self.y, grad_input=d)


class _ReLU(_Layer):
    def __init__(self, prefix: str, buf: Buffers) -> None:
        self.prefix, self.buf = prefix, buf

    def forward(self, h, params):
        self.y = torch.clamp(h, min=0, out=self.buf.get(self.prefix + "out", h.shape))
        return self.y

    def backward(self, g, params, out, need_input_grad):
        d = self.buf.get(self.prefix + "d", self.y.shape)
        return torch.ops.aten.threshold_backward.grad_input(g, self.y, 0, grad_input=d)


class _MaxPool(_Layer):
    """PyTorch's max-pooling kernels on the channels-last layout (fast on a CPU), into reused buffers."""

    def __init__(self, prefix: str, m: nn.MaxPool2d, buf: Buffers) -> None:
        self.prefix, self.buf = prefix, buf
        pair = lambda v: [v, v] if isinstance(v, int) else list(v)
        self.k = pair(m.kernel_size)
        self.s = pair(m.stride if m.stride is not None else m.kernel_size)

    @staticmethod
    def _nchw(t: torch.Tensor) -> torch.Tensor:
        K, B, H, W, C = t.shape
        return t.view(K * B, H, W, C).permute(0, 3, 1, 2)

    def forward(self, h, params):
        K, B, H, W, C = h.shape
        Ho, Wo = (H - self.k[0]) // self.s[0] + 1, (W - self.k[1]) // self.s[1] + 1
        y = self.buf.get(self.prefix + "out", (K, B, Ho, Wo, C))
        self.arg = self.buf.get(self.prefix + "arg", (K, B, Ho, Wo, C), torch.int64)
        self.h = h if h.is_contiguous() else h.contiguous()
        torch.ops.aten.max_pool2d_with_indices.out(
            self._nchw(self.h), self.k, self.s, [0, 0], [1, 1], False, out=self._nchw(y), indices=self._nchw(self.arg)
        )
        return y

    def backward(self, g, params, out, need_input_grad):
        dh = self.buf.get(self.prefix + "din", self.h.shape)
        torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
            self._nchw(g), self._nchw(self.h), self.k, self.s, [0, 0], [1, 1], False, self._nchw(self.arg),
            grad_input=self._nchw(dh),
        )
        return dh


class _Flatten(_Layer):
    """Channels-last [K, B, H, W, C] to PyTorch's (C, H, W) flattening order, and back."""

    def __init__(self, prefix: str, buf: Buffers) -> None:
        self.prefix, self.buf = prefix, buf

    def forward(self, h, params):
        self.in_shape = h.shape
        if h.dim() == 3:
            return h
        K, B, H, W, C = h.shape
        a = self.buf.get(self.prefix + "out", (K, B, C, H, W))
        a.copy_(h.permute(0, 1, 4, 2, 3))
        return a.view(K, B, C * H * W)

    def backward(self, g, params, out, need_input_grad):
        if len(self.in_shape) == 3:
            return g
        K, B, H, W, C = self.in_shape
        d = self.buf.get(self.prefix + "din", self.in_shape)
        d.copy_(g.view(K, B, C, H, W).permute(0, 1, 3, 4, 2))
        return d


def _supported_layers(model: nn.Module, buf: Buffers) -> list[_Layer] | None:
    """The engine's layers for ``model``, or None if a layer is not supported."""
    if not isinstance(model, nn.Sequential):
        return None
    layers: list[_Layer] = []
    for name, m in model.named_children():
        prefix = f"{name}."
        if isinstance(m, nn.Conv2d):
            if (m.groups != 1 or tuple(m.dilation) != (1, 1) or isinstance(m.padding, str)
                    or m.padding_mode != "zeros"):
                return None
            layers.append(_Conv(prefix, m, buf))
        elif isinstance(m, nn.Linear):
            layers.append(_Linear(prefix, m, buf))
        elif isinstance(m, nn.Tanh):
            layers.append(_Tanh(prefix, buf))
        elif isinstance(m, nn.ReLU):
            layers.append(_ReLU(prefix, buf))
        elif isinstance(m, nn.MaxPool2d):
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
                return None
            layers.append(_MaxPool(prefix, m, buf))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                return None
            layers.append(_Flatten(prefix, buf))
        else:
            return None
    return layers


class LayerwiseGrads:
    """Per-example gradients by hand for Sequential models of supported layers (see the module docstring).

    ``__call__(params, x, y)`` takes ``x`` as ``[K, B, H, W, C]`` (channels-last)
    or ``[K, B, features]`` (a leading 1 instead of K: the same inputs for every
    model, which the first layer then unfolds once), ``y`` as ``[K, B]`` int64,
    and returns ``{name: [K, B, *shape]}`` views of buffers that the next call
    overwrites.
    """

    channels_last = True

    def __init__(self, model: nn.Module, layers: list[_Layer], buf: Buffers) -> None:
        self.layers, self.buf = layers, buf
        self.shapes = {n: p.shape for n, p in model.named_parameters()}
        self.first = next((i for i, layer in enumerate(layers) if layer.names), len(layers))

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        K, B = y.shape
        h = x
        for layer in self.layers:
            h = layer.forward(h, params)
        # Cross-entropy of each example: d loss / d logits = softmax - one-hot.
        g = self.buf.get("dlogits", h.shape)
        torch.softmax(h, dim=-1, out=g)
        g.view(K * B, -1)[torch.arange(K * B, device=g.device), y.reshape(-1)] -= 1.0
        out = {n: self.buf.get("grad:" + n, (K, B, *s)) for n, s in self.shapes.items()}
        # Back-propagate down to the first layer with parameters (nothing below it needs a gradient).
        for i in range(len(self.layers) - 1, self.first - 1, -1):
            g = self.layers[i].backward(g, params, out, need_input_grad=i > self.first)
        return out


    def logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``[K, n, classes]`` of every model on the same inputs ``x`` (``[n, ...]``, images
        channels-last), in a buffer that the next call overwrites."""
        h = x.unsqueeze(0)
        for layer in self.layers:
            h = layer.forward(h, params)
        return h


class FuncGrads:
    """``torch.func`` per-example gradients for any buffer-free model (inputs channels-first)."""

    channels_last = False

    def __init__(self, base: nn.Module) -> None:
        def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(base, params, (x.unsqueeze(0),))
            return F.cross_entropy(logits, y.unsqueeze(0))

        self._fn = vmap(vmap(grad(loss), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._fn(params, x, y)


def per_example_engine(model: nn.Module, base: nn.Module, device: torch.device,
                       prefer: str = "auto") -> LayerwiseGrads | FuncGrads:
    """The fastest engine for ``model`` (``prefer``: "auto", "layerwise" or "func")."""
    if prefer != "func":
        buf = Buffers(device)
        layers = _supported_layers(model, buf)
        if layers is not None:
            return LayerwiseGrads(model, layers, buf)
        if prefer == "layerwise":
            raise ValueError(f"model {type(model).__name__} has layers the layer-wise engine does not support")
    return FuncGrads(base)
