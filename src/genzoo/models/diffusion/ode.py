"""Generic ODE math for continuous-time models: integrators and the divergence of a vector field.

An ODE dy/dt = f(t, y) is a callable f(t: float, y: Tensor) -> Tensor on a batch y (B, ...);
every integrator returns (y(t1), number of evaluations of f) and runs from t0 to t1 in either
direction. The divergence div f = sum_i d f_i / d y_i is what the instantaneous change of
variables integrates (Chen et al. 2018): exact, or by Hutchinson's estimator (Grathwohl et al. 2019).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...errors import GenzooError

OdeFn = Callable[[float, Tensor], Tensor]
VectorField = Callable[[Tensor, Tensor], Tensor]
METHODS = ("rk45", "rk4")


# -- integrators ---------------------------------------------------------------------------------

def rk4(f: OdeFn, y0: Tensor, t0: float, t1: float, steps: int) -> tuple[Tensor, int]:
    """Classic fixed-step fourth-order Runge-Kutta from t0 to t1; returns (y(t1), evaluations)."""
    h = (t1 - t0) / steps
    y, t = y0, t0
    for _ in range(steps):
        k1 = f(t, y)
        k2 = f(t + h / 2, y + h / 2 * k1)
        k3 = f(t + h / 2, y + h / 2 * k2)
        k4 = f(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t = t + h
    return y, 4 * steps


# Dormand & Prince 1980, RK5(4)7FM: the 5th-order solution propagates, the 4th estimates the error.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def rk45(f: OdeFn, y0: Tensor, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
         max_evals: int = 100_000) -> tuple[Tensor, int]:
    """Adaptive Dormand-Prince RK5(4) from t0 to t1 (either direction), one step size for the batch.

    Error control: rms(err / (atol + rtol max(|y|, |y_new|))) <= 1, step factor
    0.9 err^(-1/5) within [0.2, 10]. Hairer, Norsett & Wanner, "Solving ODEs I", II.4.
    """
    direction = 1.0 if t1 >= t0 else -1.0
    t, y = t0, y0
    k1 = f(t, y)
    evals = 1
    scale = atol + rtol * y.abs()
    d0, d1 = (y / scale).pow(2).mean().sqrt().item(), (k1 / scale).pow(2).mean().sqrt().item()
    h = 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6
    h = min(h, abs(t1 - t0))
    while direction * (t1 - t) > 1e-12 * max(1.0, abs(t1)):
        if evals > max_evals:
            raise GenzooError(f"the ODE solver took more than {max_evals} evaluations; loosen rtol/atol or use method='rk4'.")
        h = min(h, abs(t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * k for a, k in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(f(t + _DP_C[i] * hs, yi))
        evals += 6
        y_new = y + hs * sum(b * k for b, k in zip(_DP_B5, ks) if b != 0.0)
        err = hs * sum((b5 - b4) * k for b5, b4, k in zip(_DP_B5, _DP_B4, ks) if b5 != b4)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        err_norm = (err / scale).pow(2).mean().sqrt().item()
        if err_norm <= 1.0:
            t, y, k1 = t + hs, y_new, ks[6]  # first same as last
        factor = 10.0 if err_norm == 0 else min(10.0, max(0.2, 0.9 * err_norm ** -0.2))
        h = h * (min(factor, 1.0) if err_norm > 1.0 else factor)
    return y, evals


def change_of_variables(field: VectorField, x: Tensor, t0: float, t1: float, divergence: str = "exact",
                        method: str = "rk45", steps: int = 100, rtol: float = 1e-5, atol: float = 1e-5,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """(x(t1), delta (B,), evaluations) for dx/dt = field(x, t) started at x(t0) = x, where
        delta = int_t0^t1 div field(x(t), t) dt,   so   log p_t0(x) = log p_t1(x(t1)) + delta
    (the instantaneous change of variables, Chen et al. 2018, theorem 1). `field` takes x (B, ...)
    and t (B,) in x's dtype. divergence "exact" (D backward passes per evaluation) or "hutchinson"
    (one Rademacher v per image, fixed over the solve: an unbiased estimate of delta; Grathwohl et al.
    2019); method "rk45" (rtol, atol) or "rk4" (`steps`).
    """
    if divergence not in ("exact", "hutchinson"):
        raise GenzooError(f"divergence must be exact or hutchinson, got {divergence!r}.")
    if method not in METHODS:
        raise GenzooError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    shape, B, D = x.shape, x.shape[0], x[0].numel()
    v = None
    if divergence == "hutchinson":
        v = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1

    def f(t: float, y: Tensor) -> Tensor:
        with torch.enable_grad():
            xs = y[:, :D].reshape(shape).detach().requires_grad_(True)
            dx = field(xs, torch.full((B,), t, dtype=x.dtype, device=x.device))
            div = divergence_exact(dx, xs) if v is None else divergence_hutchinson(dx, xs, v)
        return torch.cat([dx.detach().flatten(1), div.detach()[:, None]], dim=1)

    y0 = torch.cat([x.detach().flatten(1), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], dim=1)
    if method == "rk4":
        y1, evals = rk4(warped_clock(f, t0, t1), y0, 0.0, 1.0, steps)
    else:
        y1, evals = rk45(f, y0, t0, t1, rtol, atol)
    return y1[:, :D].reshape(shape), y1[:, D], evals


def warped_clock(f: OdeFn, t0: float, t1: float) -> OdeFn:
    """The same ODE on the clock s in [0, 1] with t = t0 + (t1 - t0) s^2: dy/ds = f(t(s), y) dt/ds.

    Fixed steps in s are dense where the data lie (t0), where the probability-flow field changes
    fastest; with 10 uniform RK4 steps in t the VP-SDE bound on digits was off by more than
    2 bits/dim, with 10 steps in s by under 0.05."""
    def g(s: float, y: Tensor) -> Tensor:
        return f(t0 + (t1 - t0) * s * s, y) * (2 * (t1 - t0) * s)
    return g


# -- divergences ---------------------------------------------------------------------------------

def divergence_exact(out: Tensor, x: Tensor) -> Tensor:
    """sum_i d out_i / d x_i, (B,), by one backward pass per dimension (out depends on x per image)."""
    flat = out.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
        div = div + grad.flatten(1)[:, i]
    return div


def divergence_hutchinson(out: Tensor, x: Tensor, v: Tensor) -> Tensor:
    """v^T (d out / d x) v, (B,): an unbiased estimate of the divergence for E[v v^T] = I."""
    (grad,) = torch.autograd.grad((out * v).sum(), x)
    return (grad * v).flatten(1).sum(1)
