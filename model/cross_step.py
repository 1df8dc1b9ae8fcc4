"""One layer of the paired cross networks after its matmul, as one autograd Function.

Written out by hand because, on the CPU, a cross layer's time is its elementwise passes
over [2, B, D] tensors, not its matmul: autograd's version of the same maths copies the
linear network's base and the two halves of c into new tensors (stack, cat), adds the
bias in a pass of its own, and in backward runs a pass per op. Here the forward writes
c + b straight into one buffer, multiplies each network by its own base without stacking
them, and applies dropout in place; the backward is the chain rule in as few passes.

For both networks at once (index 0: exponential, 1: linear), with h = W x_l:
    n = LayerNorm(h) without affine,  a = gamma * n + beta,  r = ReLU(a)
    u = [h + b_lo, h * r + b_hi]                 (c + b, with c = [h, h * r])
    y = (x_l + base * u) * mask                  (base: x_l or x_0; mask: dropout)
which is CrossNetwork.forward's maths.
"""

from __future__ import annotations

import torch


class CrossTail(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, x, x0, gamma, beta, bias, mask, linear_base_is_x0: bool, eps: float):
        """h [2, B, H], x and mask [2, B, 2H] (mask may be None), x0 [B, 2H], gamma and
        beta [2, 1, H], bias [2, 1, 2H]. The linear network (index 1) multiplies by x0
        when linear_base_is_x0, else by its own x (the first layer, where x is x0)."""
        half = h.shape[-1]
        n, mean, rstd = torch.native_layer_norm(h, (half,), None, None, eps)
        a = torch.addcmul(beta, n, gamma)
        r = torch.relu(a)
        u = torch.empty_like(x)
        torch.add(h, bias[..., :half], out=u[..., :half])
        torch.addcmul(bias[..., half:], h, r, out=u[..., half:])
        linear_base = x0 if linear_base_is_x0 else x[1]
        y = torch.empty_like(x)
        torch.addcmul(x[0], x[0], u[0], out=y[0])
        torch.addcmul(x[1], linear_base, u[1], out=y[1])
        if mask is not None:
            y.mul_(mask)
        ctx.save_for_backward(h, x, x0, gamma, n, mean, rstd, r, u, mask)
        ctx.linear_base_is_x0 = linear_base_is_x0
        return y

    @staticmethod
    def backward(ctx, grad_y):
        h, x, x0, gamma, n, mean, rstd, r, u, mask = ctx.saved_tensors
        half = h.shape[-1]
        linear_base = x0 if ctx.linear_base_is_x0 else x[1]
        # g becomes x's gradient in place, once everything that reads it has.
        g = grad_y * mask if mask is not None else grad_y.clone()
        # y = x + base * u:  dy/du = base,  dy/dbase = u,  dy/dx = 1 (+ u where base is x)
        grad_u = torch.empty_like(g)
        torch.mul(g[0], x[0], out=grad_u[0])
        torch.mul(g[1], linear_base, out=grad_u[1])
        grad_x0 = g[1] * u[1] if ctx.linear_base_is_x0 else None
        g[0].addcmul_(g[0], u[0])
        if not ctx.linear_base_is_x0:
            g[1].addcmul_(g[1], u[1])
        grad_bias = grad_u.sum(dim=1, keepdim=True)
        grad_lo, grad_hi = grad_u[..., :half], grad_u[..., half:]
        # u_lo = h + b_lo;  u_hi = h * r + b_hi;  r = ReLU(a);  a = gamma * n + beta
        grad_h = torch.addcmul(grad_lo, grad_hi, r)
        grad_a = torch.ops.aten.threshold_backward(grad_hi * h, r, 0)
        grad_gamma = (grad_a * n).sum(dim=1, keepdim=True)
        grad_beta = grad_a.sum(dim=1, keepdim=True)
        grad_n = grad_a.mul_(gamma)
        grad_h += torch.ops.aten.native_layer_norm_backward(
            grad_n, h, (half,), mean, rstd, None, None, (True, False, False))[0]
        return grad_h, g, grad_x0, grad_gamma, grad_beta, grad_bias, None, None, None
