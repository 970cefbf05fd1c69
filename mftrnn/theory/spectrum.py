"""Large-width spectrum of random state-to-state Jacobians and of their products (docs/theory.md §4.2).

The random n x n matrix (n -> infinity) is J = A + sum_k B_k U_k C_k, eq. (T22): A, B_k, C_k diagonal,
U_k independent, Gaussian (entries N(0, sigma_k^2 / n)) or sigma_k times a Haar-orthogonal matrix. The law of
the diagonals is a *population*: a (P,), b (K, P), c (K, P), column p = one unit's joint sample; results are
exact for n -> infinity and the law "uniform over the P samples". Products W_T = J_T ... J_1 use independent
copies (fresh U's and fresh diagonals per step, i.e. untied weights).

Public functions: ``moments`` (m1, m2 of J J^T, eq. (T23)), ``product_moments`` (M1, M2 of W W^T if the
steps are free, theory.md eq. (13)), ``product_moments_exact`` (exact M1, M2), ``stieltjes`` (the
Stieltjes transform), ``density`` (density of the squared singular values) and ``zero_atom`` (the atom at
0). Densities come from the one-step system (T24), the free-product subordination (T32) (method "free":
exact only when the steps are asymptotically free, i.e. a^2 and all c_k^2 constant across units) or the
exact block linearization (T33) (method "exact"), each solved by Newton's method with continuation; no
large matrix is sampled.

Derivation: docs/theory.md §4.2, eqs. (T22)-(T24) and (T32)-(T33).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["moments", "product_moments", "product_moments_exact", "stieltjes", "density", "zero_atom"]

_NEWTON_TOL = 1e-12  # relative Newton step at which a solve is converged
_NEWTON_MAXIT = 30
_BRANCH_TOL = 1e-10  # relative tolerance of the Im >= 0 (physical branch) checks (well below eps)
_MAX_DEPTH = 24  # bisections of one continuation step before giving up
_MAX_TRIES = 60  # solves spent on one continuation step before giving up
_BUDGET_BASE, _BUDGET_PER_POINT = 1000, 60  # Newton solves allowed for one call (see _Budget)


class _SolveError(RuntimeError):
    """A point that the solver could not reach (reported as NaN by the public functions)."""


# --------------------------------------------------------------------------------------------------
# BLAS threads
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _one_blas_thread():
    """Run the block with one BLAS thread; the previous setting is restored. The products here are
    small ((K x P)(P x K), (2KT x P)(P x 2KT)); BLAS splits them over threads, and on shared cores a
    thread that waits for a busy core makes them 10-50x slower (measured 6 ms single-threaded against
    150-290 ms with 2 threads on the project's 2-core machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------------------------------
# Population law
# --------------------------------------------------------------------------------------------------
class _Law:
    """Validated population of one Jacobian step; only a^2, b^2, c^2 and sigma^2 enter the spectrum.

    Terms with sigma_k = 0 or an all-zero b_k or c_k row add nothing to J and are dropped: their unknowns
    would vanish identically, leaving rounding noise of either sign to the branch checks (and a singular
    Newton matrix for orthogonal U). The kept terms are stored as weights of mean 1, Bw = b^2 / E b^2,
    Cw = c^2 / E c^2, and strengths t_k = sigma_k^2 E b_k^2 E c_k^2, so that every unknown is of the size of
    the resolvent entries however small a term's b, c or sigma is."""

    def __init__(self, a, b, c, sigma, orthogonal: bool):
        a = np.asarray(a, dtype=float).ravel()  # (P,)
        b = np.asarray(b, dtype=float)
        c = np.asarray(c, dtype=float)
        if b.ndim == 1:  # K = 1 given as (P,): convenience
            b = b[None, :]
        if c.ndim == 1:
            c = c[None, :]
        sigma = np.atleast_1d(np.asarray(sigma, dtype=float)).ravel()  # (K,)
        P, K = a.size, sigma.size
        if b.shape != (K, P) or c.shape != (K, P):
            raise ValueError(f"expected a (P,), b and c (K, P), sigma (K,); got a {a.shape}, b {b.shape}, "
                             f"c {c.shape}, sigma {sigma.shape}")
        if P == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(np.isfinite(c))
                          and np.all(np.isfinite(sigma))):
            raise ValueError("population arrays must be non-empty and finite")
        Bq, Cq, s2 = b * b, c * c, sigma * sigma
        Eb2, Ec2 = Bq.mean(axis=1), Cq.mean(axis=1)
        keep = (s2 > 0) & (Eb2 > 0) & (Ec2 > 0)
        self.P, self.K, self.K_given = P, int(keep.sum()), K
        self.a = a
        self.a2 = a * a  # (P,)
        self.Bq, self.Cq, self.s2 = Bq[keep], Cq[keep], s2[keep]  # kept terms, as given: (K, P), (K, P), (K,)
        self.t = s2[keep] * Eb2[keep] * Ec2[keep]  # (K,)
        self.Bw = Bq[keep] / Eb2[keep, None]  # (K, P), mean 1
        self.Cw = Cq[keep] / Ec2[keep, None]
        self.kappa = 1.0 if orthogonal else 0.0
        self.orthogonal = bool(orthogonal)
        self.m1, self.m2 = _moments(self)


def _moments(law: _Law) -> tuple[float, float]:
    """m1, m2 of J J^T (see ``moments``); dropped terms contribute 0."""
    a2, Bq, Cq, s2, P = law.a2, law.Bq, law.Cq, law.s2, law.P
    Ea2, Ea4 = a2.mean(), (a2 * a2).mean()
    Eb2, Ec2 = Bq.mean(axis=1), Cq.mean(axis=1)  # (K,)
    Ea2b2, Ea2c2 = (Bq * a2).mean(axis=1), (Cq * a2).mean(axis=1)  # (K,)
    EBB, ECC = Bq @ Bq.T / P, Cq @ Cq.T / P  # (K, K): E[b_k^2 b_l^2], E[c_k^2 c_l^2]
    m1 = Ea2 + np.sum(s2 * Eb2 * Ec2)
    sc, sb = s2 * Ec2, s2 * Eb2  # (K,)
    m2 = (Ea4 + 2.0 * np.sum(s2 * (Ec2 * Ea2b2 + Eb2 * Ea2c2))
          + sc @ EBB @ sc + sb @ ECC @ sb
          - law.kappa * np.sum((s2 * Eb2 * Ec2) ** 2))
    return float(m1), float(m2)


def _scale(law: _Law) -> float:
    """A spectral scale: the root mean square squared singular value (> 0)."""
    return max(np.sqrt(max(law.m2, 0.0)), law.m1, 1e-300)


def _cdot(coef: np.ndarray, W: np.ndarray) -> np.ndarray:
    """coef @ W for complex coef (K,) and real W (K, P), without casting W to complex."""
    return coef.real @ W + 1j * (coef.imag @ W)


def _cavg(W: np.ndarray, g: np.ndarray) -> np.ndarray:
    """<W_k g> = W @ g / P for real W (K, P) and complex g (P,)."""
    return (W @ g.real + 1j * (W @ g.imag)) / g.size


def _cgram(W1: np.ndarray, g: np.ndarray, W2: np.ndarray) -> np.ndarray:
    """<W1_k g W2_l> (K1, K2) for real W1, W2 and complex g (P,)."""
    return ((W1 * g.real) @ W2.T + 1j * ((W1 * g.imag) @ W2.T)) / g.size


# --------------------------------------------------------------------------------------------------
# Newton's method and the work budget
# --------------------------------------------------------------------------------------------------
class _Budget:
    """Newton solves left for one public call: a law that defeats the continuation ends as NaNs (with a
    warning) after a bounded amount of work instead of bisecting forever."""

    def __init__(self, solves: int):
        self.left = solves

    def spend(self):
        self.left -= 1
        if self.left < 0:
            raise _SolveError("work budget exhausted")


def _newton_solve(fun: Callable, x0: np.ndarray, chord: bool = False):
    """Newton's method on F(x) = 0 from x0; fun(x, jac) returns (F, Jacobian or None if not jac).

    The step test is componentwise relative. A solve is accepted when the step is below _NEWTON_TOL or when
    the next correction, estimated from the observed contraction (rel^2 / last), is; near zeta = 0 with
    A = 0 the Jacobian is nearly singular (it vanishes like zeta for J = sigma O: the equations lose their
    leading order there) and rounding noise can stay above the tolerance, so a stalled tiny step is accepted
    too (and its size widens the branch checks, see _branch_tol). With chord=True the
    Jacobian is reused while the residual contracts by 50x per step (the Jacobian is the expensive part of
    the exact product, the residual is cheap). A solve that keeps failing to lower the residual gives up
    early: a shorter continuation step is cheaper than a long struggle. Returns (x, Jacobian, noise), noise
    the relative step at which it stalled (0 if it converged to the tolerance), or None."""
    x = np.array(x0, dtype=complex)
    try:
        F, Jm = fun(x, True)
    except np.linalg.LinAlgError:
        return None
    if x.size == 0:
        return x, Jm, 0.0
    nF = best = np.max(np.abs(F))
    if not np.isfinite(nF):
        return None
    last, worse, njac = np.inf, 0, 1
    for it in range(_NEWTON_MAXIT):
        try:
            step = np.linalg.solve(Jm, -F)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        x = x + step
        rel = np.max(np.abs(step) / np.maximum(np.abs(x), 1e-300))
        if rel <= _NEWTON_TOL or (it > 0 and rel < 1e-5 and rel * rel <= _NEWTON_TOL * last):
            return x, Jm, 0.0
        if rel < 1e-7 and rel > 0.5 * last:  # stalled at the rounding-noise floor
            return x, Jm, rel
        if rel > 1e6 or np.max(np.abs(x)) > 1e30:
            return None
        last = rel
        try:
            if chord:
                Fn = fun(x, False)[0]
                nFn = np.max(np.abs(Fn))
                if nFn <= 0.02 * nF:  # fast contraction: keep the Jacobian (else refresh it at x)
                    F, nF = Fn, nFn
                    continue
            F, Jm = fun(x, True)
        except np.linalg.LinAlgError:
            return None
        njac += 1
        nF = np.max(np.abs(F))
        if not np.isfinite(nF):
            return None
        if nF < best:
            best = nF
        else:
            worse += 1
        if worse >= 3 or njac > 12:
            return None
    return None


# --------------------------------------------------------------------------------------------------
# One step: the Hermitized fixed point, eq. (T24)
# --------------------------------------------------------------------------------------------------
@dataclass
class _Sol:
    """Converged solution of (T24) at zeta = w^2."""

    zeta: complex
    x: np.ndarray  # (2K,) complex: u = phi alpha (K), v = phi beta (K), in the normalized weights of _Law
    s: complex  # Stieltjes transform s_J(zeta)
    ds: complex  # d s_J / d zeta
    psi: complex  # psi_J(1/zeta) = -1 - zeta s_J(zeta), computed without cancellation (small |psi|)
    opsi: complex  # 1 + psi = -zeta s_J(zeta) = -w <g1>, accurate also when psi ~ -1 (zeta -> 0)


def _blocks(law: _Law, w: complex, x: np.ndarray, with_psi: bool = False):
    """Per-unit resolvent entries g1, g2, g12^2 (each (P,)) for the unknowns x = (u, v); optionally also
    psi_p = -1 - w g1_p = (yy Sigma1_p + a_p^2)/det_p (the same quantity without the cancellation).

    The unknowns are the self-energy amplitudes u_k = phi_k alpha_k, v_k = phi_k beta_k of (T24), so that
    Sigma1_p = sum_k t_k Bw_kp v_k, Sigma2_p = sum_k t_k Cw_kp u_k and phi_k = 1 - kappa t_k u_k v_k is
    explicit (the quadratic of (T24) divided by phi). They stay bounded where alpha, beta have poles (an atom
    away from 0, e.g. J = sigma O: alpha ~ 1/(zeta - sigma^2) while phi alpha = -1/w)."""
    K = law.K
    sig1 = _cdot(law.t * x[K:], law.Bw) if K else 0.0  # (P,)
    sig2 = _cdot(law.t * x[:K], law.Cw) if K else 0.0
    xx, yy = -w - sig1, -w - sig2
    det = xx * yy - law.a2
    g1, g2 = yy / det, xx / det
    g12sq = law.a2 / (det * det)
    if with_psi:
        return g1, g2, g12sq, (yy * sig1 + law.a2) / det
    return g1, g2, g12sq


def _residual_jacobian(law: _Law, w: complex, x: np.ndarray, jac: bool = True):
    """Residual F(x) of (T24) in the unknowns (u, v) (2K,) and its Jacobian dF/dx (2K, 2K):
    F_u = u - phi <Bw g1>, F_v = v - phi <Cw g2>, phi = 1 - kappa t u v."""
    K = law.K
    u, v = x[:K], x[K:]
    g1, g2, g12sq = _blocks(law, w, x)
    t, kap = law.t, law.kappa
    A, B = _cavg(law.Bw, g1), _cavg(law.Cw, g2)
    ph = 1.0 - kap * t * u * v
    F = np.concatenate([u - ph * A, v - ph * B])
    if not jac:
        return F, None
    # dM = M dSigma M per unit: dg1 = g1^2 dSigma1 + g12^2 dSigma2, dg2 = g12^2 dSigma1 + g2^2 dSigma2, with
    # dSigma1 = t_l Bw_l dv_l, dSigma2 = t_l Cw_l du_l.
    Bw, Cw = law.Bw, law.Cw
    Jm = np.empty((2 * K, 2 * K), dtype=complex)
    Jm[:K, :K] = -(ph[:, None] * _cgram(Bw, g12sq, Cw)) * t + np.diag(1.0 + kap * t * v * A)
    Jm[:K, K:] = -(ph[:, None] * _cgram(Bw, g1 * g1, Bw)) * t + np.diag(kap * t * u * A)
    Jm[K:, :K] = -(ph[:, None] * _cgram(Cw, g2 * g2, Cw)) * t + np.diag(kap * t * v * B)
    Jm[K:, K:] = -(ph[:, None] * _cgram(Cw, g12sq, Bw)) * t + np.diag(1.0 + kap * t * u * B)
    return F, Jm


def _branch_tol(noise: float) -> float:
    """Relative tolerance of the Im >= 0 checks for a solution whose Newton iteration stalled at the relative
    step noise: near zeta = 0 with A = 0 (e.g. J = sigma O) the system is ill-conditioned (its Jacobian
    vanishes like zeta) and rounding noise of ~1e-7 relative would otherwise fail the checks."""
    return max(_BRANCH_TOL, 30.0 * noise)


def _physical_im(y: np.ndarray, tol: float = _BRANCH_TOL) -> bool:
    """Im y >= 0 up to a relative tolerance, with a tiny absolute floor for entries that vanish exactly."""
    if y.size == 0:
        return True
    return not np.any(y.imag < -tol * np.abs(y) - 1e-13 * np.max(np.abs(y)))


def _physical(law: _Law, x: np.ndarray, g1: np.ndarray, g2: np.ndarray, tol: float = _BRANCH_TOL) -> bool:
    """Physical branch: Im M_p >= 0 (resolvent of a symmetric matrix) and Im of the self-energies >= 0."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))):
        return False
    return _physical_im(g1, tol) and _physical_im(g2, tol) and _physical_im(x, tol)


def _finish(law: _Law, zeta: complex, w: complex, x: np.ndarray, Jm: np.ndarray,
            noise: float = 0.0) -> _Sol | None:
    """Stieltjes transform and its zeta-derivative (implicit function theorem) at a converged x.

    Jm is the Jacobian of the last Newton iteration (at x up to the last, tiny, step): it only enters
    ds, which only steers the Newton iteration of (T32)."""
    K = law.K
    g1, g2, g12sq, psi_p = _blocks(law, w, x, with_psi=True)
    if not _physical(law, x, g1, g2, _branch_tol(noise)):
        return None
    G1 = g1.mean()
    dG1 = np.mean(g1 * g1 + g12sq)  # d<g1>/dw at fixed self-energies
    if K:
        u, v = x[:K], x[K:]
        ph = 1.0 - law.kappa * law.t * u * v
        Fw = -np.concatenate([ph * _cavg(law.Bw, g1 * g1 + g12sq), ph * _cavg(law.Cw, g12sq + g2 * g2)])
        try:
            dx = -np.linalg.solve(Jm, Fw)  # dx/dw  (2K,)
        except np.linalg.LinAlgError:
            return None
        dsig1 = _cdot(law.t * dx[K:], law.Bw)  # (P,)
        dsig2 = _cdot(law.t * dx[:K], law.Cw)
        dG1 = np.mean(g1 * g1 * (1.0 + dsig1) + g12sq * (1.0 + dsig2))
    s = G1 / w
    ds = (dG1 / w - G1 / (w * w)) / (2.0 * w)  # dw/dzeta = 1/(2w)
    psi = np.mean(psi_p)
    if not (np.isfinite(s) and np.isfinite(ds) and np.isfinite(psi)):
        return None
    return _Sol(complex(zeta), x, complex(s), complex(ds), complex(psi), complex(-w * G1))


def _newton(law: _Law, zeta: complex, x0: np.ndarray) -> _Sol | None:
    """Newton's method for (T24) at zeta from x0; None if it does not converge to the physical branch."""
    w = np.sqrt(complex(zeta))  # principal root: first quadrant for zeta in the upper half-plane
    found = _newton_solve(lambda x, jac: _residual_jacobian(law, w, x, jac), x0)
    return None if found is None else _finish(law, zeta, w, *found)


def _damped_fixed_point(law: _Law, zeta: complex, x0: np.ndarray, damping: float = 0.5,
                        maxit: int = 5000) -> _Sol | None:
    """Damped fixed-point iteration of (T24) (last resort: slow near the real axis, but it needs no good
    start), polished by Newton: alpha = <Bw g1>, beta = <Cw g2>, phi the root of
    kappa t alpha beta phi^2 + phi - 1 = 0 nearer to the current phi = 1 - kappa t u v, u = phi alpha,
    v = phi beta. Both roots can be physical-looking (Im >= 0 everywhere): for J = sigma O near zeta = 0 the
    physical one is phi ~ -1/(t alpha beta), not the root near 1, so the branch is kept, not chosen."""
    w = np.sqrt(complex(zeta))
    K = law.K
    x = np.array(x0, dtype=complex)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(maxit):
            g1, g2, _ = _blocks(law, w, x)
            al, be = _cavg(law.Bw, g1), _cavg(law.Cw, g2)
            ph0 = 1.0 - law.kappa * law.t * x[:K] * x[K:]
            sq = np.sqrt(1.0 + 4.0 * law.kappa * law.t * al * be)
            ph1, ph2 = 2.0 / (1.0 + sq), 2.0 / (1.0 - sq)
            ph = np.where(np.abs(ph1 - ph0) <= np.abs(ph2 - ph0), ph1, ph2)
            new = np.concatenate([ph * al, ph * be])
            if not np.all(np.isfinite(new)):
                return None
            if K == 0 or np.max(np.abs(new - x)) <= 1e-10 * np.max(np.abs(new)):
                return _newton(law, zeta, new)
            x = (1.0 - damping) * x + damping * new
    return _newton(law, zeta, x)


def _far_start(law: _Law, zeta: complex) -> np.ndarray:
    """Large-|zeta| asymptotics of (T24): g1, g2 ~ -1/w, phi ~ 1, so u, v ~ -1/w (the weights have mean 1)."""
    w = np.sqrt(complex(zeta))
    return np.full(2 * law.K, -1.0 / w, dtype=complex)


# --------------------------------------------------------------------------------------------------
# Continuation
# --------------------------------------------------------------------------------------------------
def _advance(step: Callable, prev, zeta: complex, depth: int = 0, budget: list | None = None,
             tried: bool = False):
    """Solve at zeta starting from the solution prev (at prev.zeta); bisect the step on failure (tried:
    the direct step is known to fail).

    At most _MAX_DEPTH nested bisections and _MAX_TRIES solves in all (a region where every solve fails
    would otherwise cost 2^depth solves); None if that is not enough."""
    if budget is None:
        budget = [_MAX_TRIES]
    if not tried:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        sol = step(zeta, prev)
        if sol is not None or depth >= _MAX_DEPTH:
            return sol
    mid = 0.5 * (prev.zeta + zeta)
    half = _advance(step, prev, mid, depth + 1, budget)
    if half is None:
        return None
    return _advance(step, half, zeta, depth + 1, budget)


def _predict(hist: list, zeta: complex):
    """Extrapolation of the unknowns to zeta from the last (up to three) solutions of the path: Lagrange
    polynomial in log zeta (quadratic from three points, linear from two). In log zeta because the grids are
    geometric and the unknowns behave like powers of zeta near 0 and at large zeta (measured median error
    6e-4 against 2e-2 for linear extrapolation in zeta on a 60-point product grid). None if the new step is
    much longer than the previous ones."""
    if len(hist) < 2 or hist[-1].x.size == 0:
        return None
    pts = hist[-3:]
    ls = [np.log(p.zeta) for p in pts]
    t = np.log(zeta)
    h_old = abs(ls[-1] - ls[-2])
    if h_old == 0 or abs(t - ls[-1]) > 3.0 * h_old:
        return None
    if len(pts) == 3 and h_old / 3.0 <= abs(ls[1] - ls[0]) <= 3.0 * h_old:
        l0, l1, l2 = ls
        return (pts[0].x * ((t - l1) * (t - l2) / ((l0 - l1) * (l0 - l2)))
                + pts[1].x * ((t - l0) * (t - l2) / ((l1 - l0) * (l1 - l2)))
                + pts[2].x * ((t - l0) * (t - l1) / ((l2 - l0) * (l2 - l1))))
    return pts[-1].x + (pts[-1].x - pts[-2].x) * ((t - ls[-1]) / (ls[-1] - ls[-2]))


class _Continuation:
    """Path continuation shared by the solvers. Subclasses define step(zeta, prev, x0=None) (one
    warm-started solve, from x0 if given, else from prev; None on failure or off the physical branch),
    far(zeta) (a solve far from the spectrum) and scale; self.budget bounds the number of Newton solves."""

    scale: float
    budget: _Budget

    def step(self, zeta: complex, prev, x0=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def far(self, zeta: complex):  # pragma: no cover - abstract
        raise NotImplementedError

    def rescue(self, zeta: complex, prev):
        """Last resort when bisection fails (subclasses may override)."""
        return None

    def _predicted(self, zeta: complex, hist: list):
        """A step from the extrapolated unknowns, then (if that fails) from the last solution itself."""
        guess = _predict(hist, zeta)
        if guess is not None:
            sol = self.step(zeta, hist[-1], guess)
            if sol is not None:
                return sol
        return self.step(zeta, hist[-1])

    def _vertical(self, sol, y_end: float):
        """Move from sol vertically (Re zeta fixed) to Im zeta = y_end, with an adaptive step in log(Im zeta)
        (one decade at first; halved on failure, doubled on success up to four decades)."""
        re, y = sol.zeta.real, sol.zeta.imag
        hist = [sol]
        h = 1.0
        while y != y_end:
            y_new = y * 10.0 ** (-h) if y_end < y else y * 10.0 ** h
            y_new = max(y_new, y_end) if y_end < y else min(y_new, y_end)
            z = complex(re, y_new)
            nxt = self._predicted(z, hist)
            if nxt is None:
                if h > 1e-3:
                    h *= 0.5
                    continue
                nxt = self.rescue(z, hist[-1])
                if nxt is None:
                    raise _SolveError(f"continuation failed at zeta={z}")
            hist = hist[-2:] + [nxt]
            y = y_new
            h = min(2.0 * h, 4.0)
        return hist[-1]

    def descend(self, target: complex):
        """Solve at target by coming down vertically from far above it (robust, slower)."""
        y_far = 100.0 * (self.scale + abs(target))
        return self._vertical(self.far(complex(target.real, y_far)), max(target.imag, 1e-300))

    def detour(self, prev, target: complex):
        """Reach target from prev around the real axis: up to the height |target - prev.zeta| above both,
        across, and down. Used when the direct step fails, typically across a spectral edge, where the
        solution on the smoothed real axis turns on a scale eps * lambda but is smooth a step-length above it.
        None if that fails too."""
        top = max(prev.zeta.imag, target.imag) + abs(target - prev.zeta)
        try:
            up = self._vertical(prev, top)
            over = _advance(self.step, up, complex(target.real, top), budget=[20])
            return None if over is None else self._vertical(over, target.imag)
        except _SolveError as exc:
            if "budget" in str(exc):
                raise
            return None

    def solve_along(self, zetas: Sequence[complex], stop: bool = False) -> list:
        """Solutions at zetas in order, each continued from the previous (extrapolated start, a detour
        around the real axis, bisection, then a fresh descent). A point that cannot be reached is None;
        after the work budget is spent (or after the first failure, if stop) every remaining point is None."""
        zetas = [complex(z) for z in zetas]
        self.budget = _Budget(_BUDGET_BASE + _BUDGET_PER_POINT * len(zetas))
        out: list = []
        hist: list = []
        for i, z in enumerate(zetas):
            try:
                sol = None
                if hist:
                    tries = [20 if stop else _MAX_TRIES]
                    sol = (self._predicted(z, hist) or self.detour(hist[-1], z)
                           or _advance(self.step, hist[-1], z, tried=True, budget=tries))
                    if sol is None and stop:
                        raise _SolveError(f"continuation failed at zeta={z}")
                if sol is None:
                    sol = self.descend(z)
                    hist = []
            except _SolveError as exc:
                out.append(None)
                if stop or "budget" in str(exc):
                    out.extend([None] * (len(zetas) - i - 1))
                    return out
                continue
            out.append(sol)
            hist = hist[-2:] + [sol]
        return out


class _OneStep(_Continuation):
    """Solver of (T24) with continuation; step(zeta, prev) is one Newton solve warm-started at prev."""

    def __init__(self, law: _Law):
        self.law = law
        self.scale = _scale(law)
        self.budget = _Budget(_BUDGET_BASE)

    def step(self, zeta: complex, prev: _Sol, x0=None) -> _Sol | None:
        if not zeta.imag > 0:
            return None
        self.budget.spend()
        return _newton(self.law, zeta, prev.x if x0 is None else x0)

    def far(self, zeta: complex) -> _Sol:
        """Solve at a point far from the spectrum (|zeta| >> scale) from the asymptotic start."""
        x0 = _far_start(self.law, zeta)
        self.budget.spend()
        sol = _newton(self.law, zeta, x0) or _damped_fixed_point(self.law, zeta, x0)
        if sol is None:
            raise _SolveError(f"no solution of the fixed point at zeta={zeta}")
        return sol

    def rescue(self, zeta: complex, prev: _Sol) -> _Sol | None:
        self.budget.spend()
        return _damped_fixed_point(self.law, zeta, prev.x)


# --------------------------------------------------------------------------------------------------
# Products: the subordination equation (T32)
# --------------------------------------------------------------------------------------------------
@dataclass
class _PSol:
    """Converged solution of (T32) at zeta, with the inner one-step solution at zeta_J = 1/v."""

    zeta: complex
    v: complex
    inner: _Sol
    s: complex  # s_W(zeta)

    @property
    def x(self) -> np.ndarray:  # the unknown, for the extrapolated start (_predict)
        return np.array([self.v])


def _wrap(r: complex) -> complex:
    """Residual of exp(r) = 1, reduced modulo 2 pi i to Im in (-pi, pi]."""
    return complex(r.real, (r.imag + np.pi) % (2.0 * np.pi) - np.pi)


class _FreeProduct(_Continuation):
    """Solver of (T32) for T >= 2 with continuation (outer Newton in v, inner (T24) at 1/v)."""

    def __init__(self, law: _Law, T: int):
        self.one = _OneStep(law)
        self.T = T
        self.m1 = law.m1
        self.scale = max(_scale(law) ** T, 1e-300)

    @property
    def budget(self) -> _Budget:  # shared with the inner solver, which does the Newton solves
        return self.one.budget

    @budget.setter
    def budget(self, value: _Budget):
        self.one.budget = value

    def _inner(self, zj: complex, prev: _Sol) -> _Sol | None:
        if not zj.imag > 0:
            return None
        return _advance(self.one.step, prev, zj, depth=_MAX_DEPTH - 8, budget=[40])

    def _terms(self, v: complex, inner: _Sol, zeta: complex):
        T = self.T
        zj = 1.0 / v
        # psi_J(v) = -1 - s_J(1/v)/v and 1 + psi, each from the form without cancellation: |psi| is small
        # far from the spectrum (v -> 0), |1 + psi| is small near lambda = 0 (|v| -> inf)
        psi, opsi = inner.psi, inner.opsi
        dpsi = zj * zj * inner.s + zj ** 3 * inner.ds  # only steers Newton: cancellation harmless
        if psi == 0 or opsi == 0:
            return None
        r = _wrap(T * np.log(v) + (T - 1) * (np.log(opsi) - np.log(psi)) + np.log(zeta))
        dr = T / v - (T - 1) * dpsi / (psi * opsi)
        return opsi, r, dr

    def step(self, zeta: complex, prev: _PSol, x0=None) -> _PSol | None:
        """Damped Newton for v at zeta, warm-started at prev (or at v = x0[0])."""
        if not zeta.imag > 0:
            return None
        v = prev.v if x0 is None else complex(x0[0])
        if v == 0 or not (1.0 / v).imag > 0:
            return None
        inner = self._inner(1.0 / v, prev.inner)
        if inner is None:
            return None
        terms = self._terms(v, inner, zeta)
        if terms is None:
            return None
        last = np.inf
        for _ in range(_NEWTON_MAXIT):
            _, r, dr = terms
            if dr == 0 or not np.isfinite(dr):
                return None
            dv = -r / dr
            accepted = False
            for _ in range(12):  # damping: keep 1/v in the upper half-plane and |r| decreasing
                vt = v + dv
                if vt != 0 and (1.0 / vt).imag > 0:
                    it = self._inner(1.0 / vt, inner)
                    if it is not None:
                        tt = self._terms(vt, it, zeta)
                        if tt is not None and (abs(tt[1]) < abs(r) or abs(r) < 1e-10):
                            v, inner, terms, accepted = vt, it, tt, True
                            break
                dv *= 0.5
            if not accepted:
                return None
            rel = abs(dv) / abs(v)
            stalled = rel < 1e-7 and rel > 0.5 * last  # rounding-noise floor (see _newton_solve)
            last = rel
            if rel <= 10 * _NEWTON_TOL or abs(terms[1]) <= 1e-14 or stalled:
                s = -terms[0] / zeta  # s_W = -(1 + psi_J(v)) / zeta
                if s.imag < -_BRANCH_TOL * abs(s):
                    return None
                return _PSol(complex(zeta), complex(v), inner, complex(s))
        return None

    def far(self, zeta: complex) -> _PSol:
        v0 = self.m1 ** (self.T - 1) / zeta
        inner = self.one.far(1.0 / v0) if (1.0 / v0).imag > 0 else None
        if inner is None:
            raise _SolveError(f"bad far start at zeta={zeta}")
        start = _PSol(complex(zeta), complex(v0), inner, 0j)
        sol = self.step(complex(zeta), start)
        if sol is None:
            raise _SolveError(f"product solver failed far from the spectrum at zeta={zeta}")
        return sol


# --------------------------------------------------------------------------------------------------
# Products, exact: Hermitian linearization of W = J_T ... J_1, eq. (T33)
# --------------------------------------------------------------------------------------------------
@dataclass
class _XSol:
    """Converged solution of (T33) at zeta."""

    zeta: complex
    x: np.ndarray  # (2KT,) complex: u (T*K), v (T*K); index tt*K + k, step t = tt + 1
    s: complex  # s_W(zeta)


class _Tridiag:
    """Inverses of P complex symmetric tridiagonal N x N matrices (one per unit p) with a fixed real
    off-diagonal e (N-1, P) and a diagonal written by the caller into ``d`` (a complex (N, P) array) before
    each ``inverse`` call.

    ``inverse(factors)`` returns the diagonal of the inverse, M_kk (N, P), and, if factors, the block
    [lo:hi, lo:hi] in semiseparable form (X, Y, bad, blk): for units p not in bad, M_ij^2 = X_ip Y_jp for
    i <= j (local indices); for the units in bad (index array), blk (hi-lo, hi-lo, nb) holds M_ij itself
    for i <= j. The returned arrays are work buffers, overwritten by the next call.

    Ratio (continued-fraction) form of the usual recursions: left pivots l_k = d_k - e_{k-1}^2 / l_{k-1},
    right pivots r_k = d_k - e_k^2 / r_{k+1}, then M_kk = 1/(l_k + r_k - d_k) and, with
    C_j = prod_{k<=j} (-e_{k-1} / r_k), M_ij = (M_ii / C_i) C_j for i <= j, so X = (M_ii / C_i)^2, Y = C_j^2.
    Both recursions run in one loop (row j holds l_j and r_{N-1-j}), in real arithmetic (1/z = conj(z)/|z|^2
    with e real: numpy's complex division is ~10x slower than a multiplication), into preallocated buffers:
    fresh arrays of this size page-fault on every call, which cost more than the arithmetic here (measured
    11 ms vs 0.1 ms for six 1.5 MB temporaries). Units with an exact zero coupling (a_t = 0), where C
    vanishes, or where C leaves a safe range get their block explicitly; units where a pivot vanishes are
    redone with a dense inverse (pivoting, no such issue)."""

    def __init__(self, e: np.ndarray, lo: int, hi: int):
        N, P = e.shape[0] + 1, e.shape[1]
        self.N, self.P, self.lo, self.hi = N, P, lo, hi
        self.e, self.e2 = e, e * e
        self.d = np.zeros((N, P), dtype=complex)
        self.E2 = np.concatenate([self.e2, self.e2[::-1]], axis=1)  # (N-1, 2P)
        self.Dr, self.Di = np.empty((N, 2 * P)), np.empty((N, 2 * P))
        self.Lr, self.Li, self.Ia = np.empty((N, 2 * P)), np.empty((N, 2 * P)), np.empty((N, 2 * P))
        self.t1, self.t2 = np.empty(2 * P), np.empty(2 * P)
        self.nr, self.ni, self.w1, self.w2 = (np.empty((N, P)) for _ in range(4))
        self.diag = np.empty((N, P), dtype=complex)
        m = hi - lo
        self.cum, self.X, self.Y = (np.empty((m, P), dtype=complex) for _ in range(3))
        self.absc2, self.sc = np.empty((m, P)), np.empty((m - 1, P))

    def inverse(self, factors: bool, reuse: bool = False):
        """reuse: d is unchanged since the last call (which computed the pivots and the diagonal)."""
        N, P, lo, hi = self.N, self.P, self.lo, self.hi
        Dr, Di, Lr, Li, Ia, t1, t2 = self.Dr, self.Di, self.Lr, self.Li, self.Ia, self.t1, self.t2
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            rr, ri, ria = Lr[::-1, P:], Li[::-1, P:], Ia[::-1, P:]  # right pivots r_k, 1/|r_k|^2 (N, P)
            diag = self.diag
            if not reuse:
                np.copyto(Dr[:, :P], self.d.real)
                np.copyto(Di[:, :P], self.d.imag)
                np.copyto(Dr[:, P:], Dr[::-1, :P])
                np.copyto(Di[:, P:], Di[::-1, :P])
                Lr[0], Li[0] = Dr[0], Di[0]
                for j in range(1, N + 1):  # Ia[j-1] = 1/|pivot_{j-1}|^2, then pivot j
                    a, b = Lr[j - 1], Li[j - 1]
                    np.multiply(a, a, out=t1)
                    np.multiply(b, b, out=t2)
                    t1 += t2
                    np.divide(1.0, t1, out=Ia[j - 1])
                    if j == N:
                        break
                    np.multiply(self.E2[j - 1], Ia[j - 1], out=t1)  # q = e^2 / |pivot|^2
                    np.multiply(t1, a, out=t2)
                    np.subtract(Dr[j], t2, out=Lr[j])
                    np.multiply(t1, b, out=t2)
                    np.add(Di[j], t2, out=Li[j])
                nr, ni, w1, w2 = self.nr, self.ni, self.w1, self.w2
                np.add(Lr[:, :P], rr, out=nr)
                nr -= Dr[:, :P]
                np.add(Li[:, :P], ri, out=ni)
                ni -= Di[:, :P]
                np.multiply(nr, nr, out=w1)
                np.multiply(ni, ni, out=w2)
                w1 += w2
                np.divide(1.0, w1, out=w1)
                np.multiply(nr, w1, out=diag.real)
                np.multiply(ni, w1, out=diag.imag)
                np.negative(diag.imag, out=diag.imag)
                self.ok = np.isfinite(diag.sum(axis=0))  # a vanishing pivot leaves inf or nan in its column
            ok = self.ok.copy()
            if factors:
                cum, absc2, sc, X, Y = self.cum, self.absc2, self.sc, self.X, self.Y
                # rho_j = -e_{j-1} / r_j = -e_{j-1} conj(r_j) / |r_j|^2, j = lo+1 .. hi-1
                np.multiply(self.e[lo:hi - 1], ria[lo + 1:hi], out=sc)
                cum[0] = 1.0
                np.multiply(sc, rr[lo + 1:hi], out=cum[1:].real)
                np.negative(cum[1:].real, out=cum[1:].real)
                np.multiply(sc, ri[lo + 1:hi], out=cum[1:].imag)
                np.cumprod(cum, axis=0, out=cum)
                absc2[0] = 1.0
                np.multiply(self.e2[lo:hi - 1], ria[lo + 1:hi], out=absc2[1:])
                np.cumprod(absc2, axis=0, out=absc2)  # |C_j|^2
                cmax2, cmin2 = np.max(absc2, axis=0), np.min(absc2, axis=0)  # C_0 = 1: cmin2 <= 1 <= cmax2
                ok &= np.isfinite(cmax2) & (cmin2 > 0) & (cmax2 < 1e200 * cmin2)
                f2 = np.where(ok, np.sqrt(cmax2 * cmin2), 1.0)  # centre the range of the factors
                np.conjugate(cum, out=X)
                X *= diag[lo:hi]
                X /= absc2  # M_ii / C_i
                X *= X
                X *= f2
                np.multiply(cum, cum, out=Y)
                Y /= f2
        bad = np.nonzero(~ok)[0]
        if not factors:
            if bad.size:
                diag[:, bad] = np.diagonal(self._dense(bad), axis1=1, axis2=2).T
            return diag, None
        blk = None
        if bad.size:
            # units with an exact zero coupling (a_t = 0: M splits into blocks and C vanishes) or with C out
            # of range: explicit rows M_ij = M_ii prod_{k=i+1..j} rho_k (zero across a cut, no division);
            # units whose pivots vanish: a dense inverse
            X[:, bad] = 0.0  # these columns may hold inf or nan
            Y[:, bad] = 0.0
            m = hi - lo
            blk = np.zeros((m, m, bad.size), dtype=complex)  # upper triangle of M[lo:hi, lo:hi]
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                rows = slice(lo + 1, hi)
                rho = -self.e[lo:hi - 1, bad] * ria[rows, bad] * (rr[rows, bad] - 1j * ri[rows, bad])
                for k in range(m):
                    blk[k, k] = diag[lo + k, bad]
                    if k + 1 < m:
                        blk[k, k + 1:] = diag[lo + k, bad] * np.cumprod(rho[k:], axis=0)
            dense = ~(self.ok[bad] & np.all(np.isfinite(blk), axis=(0, 1)))
            if np.any(dense):
                full = self._dense(bad[dense])
                diag[:, bad[dense]] = np.diagonal(full, axis1=1, axis2=2).T
                blk[:, :, dense] = np.transpose(full[:, lo:hi, lo:hi], (1, 2, 0))
        return diag, (X, Y, bad, blk)

    def _dense(self, cols: np.ndarray) -> np.ndarray:
        """Dense inverses (len(cols), N, N) of the units cols; raises LinAlgError for a singular pencil."""
        N = self.N
        dense = np.zeros((cols.size, N, N), dtype=complex)
        ar = np.arange(N)
        dense[:, ar, ar] = self.d[:, cols].T
        dense[:, ar[:-1], ar[1:]] = self.e[:, cols].T
        dense[:, ar[1:], ar[:-1]] = self.e[:, cols].T
        return np.linalg.inv(dense)


class _ExactProduct(_Continuation):
    """Exact large-n solver for W = J_T ... J_1 with independent steps (untied weights), pencil (T33).

    Per unit the pencil is a symmetric tridiagonal (2T+4) x (2T+4) matrix, indices
    x, s_0, f_0, s_1, f_1, ..., s_T, f_T, y (0 .. 2T+3): diagonal -w at x and y, 0 at s_0 and f_T, minus the
    self-energies at the f_i, s_{i+1} (i < T); off-diagonal 1 on (x,s_0), (s_i,f_i), (f_T,y) and a_t on
    (f_i, s_{i+1}) with t = T - i (the position of J_t). Step t's units are a random permutation of the
    population (independent steps: the per-unit tuples follow the product law, sampled once, seed 0).

    Unknowns: u_(t,k) = phi alpha, v_(t,k) = phi beta (as for one step, see _blocks). "Slot" j averages M
    at position pa_j with weight Lw_j, and its unknown feeds Sigma at position pi_j with weight Win_j: the
    alpha-slot (t, k) averages at f (row side of J_t) with Bw and its u feeds s (column side) with Cw; the
    beta-slot averages at s with Cw and its v feeds f with Bw (so pi, Win are pa, Lw with the halves
    swapped). Newton's matrix needs Q[j, j'] = <Lw_j M[pa_j, pi_j']^2 Win_j'> (dM = M dSigma M); with the
    semiseparable form of M (see _Tridiag) it is one complex matrix product (2KT, P) x (P, 2KT). The
    residual needs only the diagonal of M, so Newton reuses the matrix while the residual contracts fast
    (chord steps, see _newton_solve)."""

    def __init__(self, law: _Law, T: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        P, K = law.P, law.K
        idx = np.stack([rng.permutation(P) for _ in range(T)])  # (T, P): units of step tt + 1
        self.law, self.T, self.K, self.P = law, T, K, P
        self.N = 2 * T + 4
        self.Bw = np.ascontiguousarray(np.transpose(law.Bw[:, idx], (1, 0, 2)))  # (T, K, P)
        self.Cw = np.ascontiguousarray(np.transpose(law.Cw[:, idx], (1, 0, 2)))  # (T, K, P)
        tt = np.arange(T)
        self.r = 2 * (T - 1 - tt) + 2  # global index of f_i (row side of J_{tt+1}), i = T-1-tt   (T,)
        self.q = self.r + 1  # global index of s_{i+1} (column side)
        e = np.ones((self.N - 1, P))
        e[self.r] = law.a[idx]  # a_t between f_i and s_{i+1}
        self.tri = _Tridiag(e, 2, 2 * T + 2)
        rr, qq = np.repeat(self.r, K), np.repeat(self.q, K)
        self.pa = np.concatenate([rr, qq]) - 2  # local index (block starts at global 2)
        self.upper_s = self.pa[:, None] <= self.pa[None, :]  # where M[pa, pa']^2 = X[pa] Y[pa']
        self.swap = np.concatenate([np.arange(K * T, 2 * K * T), np.arange(K * T)])
        self._slots_at = [np.nonzero(self.pa == u)[0] for u in range(2 * T)]  # the K slots at each position
        Bf, Cf = self.Bw.reshape(T * K, P), self.Cw.reshape(T * K, P)
        self.Lw = np.concatenate([Bf, Cf])  # (2KT, P): the weight of slot j
        self.G, self.H = np.empty((2 * K * T, P), dtype=complex), np.empty((2 * K * T, P), dtype=complex)
        self.sig = np.empty((T, P))
        self._last = None  # (w, x) of the inverse held by self.tri
        self.t = np.tile(law.t, T)  # (KT,)
        self.scale = max(_scale(law) ** T, 1e-300)
        self.budget = _Budget(_BUDGET_BASE)

    def _inverse(self, w: complex, x: np.ndarray, factors: bool):
        T, K, N = self.T, self.K, self.N
        KT = K * T
        if factors and self._last is not None and self._last[0] == w and np.array_equal(self._last[1], x):
            return self.tri.inverse(True, reuse=True)  # the residual at this x was just computed
        self._last = (w, x.copy())
        d, sig = self.tri.d, self.sig
        d[0] = d[N - 1] = -w
        if K:
            u, v = x[:KT].reshape(T, K), x[KT:].reshape(T, K)
            t = self.t.reshape(T, K)
            for rows, coef, W in ((self.r, t * v, self.Bw), (self.q, t * u, self.Cw)):
                np.einsum("tk,tkp->tp", coef.real, W, out=sig)
                d.real[rows] = sig
                np.einsum("tk,tkp->tp", coef.imag, W, out=sig)
                d.imag[rows] = sig
            np.negative(d[2:2 * T + 2], out=d[2:2 * T + 2])
        return self.tri.inverse(factors)

    def _residual_jacobian(self, w: complex, x: np.ndarray, jac: bool = True):
        KT, P = self.K * self.T, self.P
        diag, fac = self._inverse(w, x, jac)
        u, v = x[:KT], x[KT:]
        T, K = self.T, self.K
        # Avg_j = <Lw_j M[pa_j, pa_j]>: rows f_i = 2T, 2T-2, ..., 2 (steps tt = 0..T-1), s_{i+1} one below
        Mr, Mq = diag[2:2 * T + 1:2][::-1], diag[3:2 * T + 2:2][::-1]
        Avg = np.concatenate([
            np.einsum("tkp,tp->tk", self.Bw, Mr.real) + 1j * np.einsum("tkp,tp->tk", self.Bw, Mr.imag),
            np.einsum("tkp,tp->tk", self.Cw, Mq.real) + 1j * np.einsum("tkp,tp->tk", self.Cw, Mq.imag),
        ]).ravel() / P  # (2KT,)
        kap, t = self.law.kappa, self.t
        ph = 1.0 - kap * t * u * v
        ph2 = np.concatenate([ph, ph])
        F = x - ph2 * Avg
        if not jac:
            return F, None
        X, Y, bad, blk = fac
        # Q[j, j'] = <Lw_j M[pa_j, pi_j']^2 Win_j'> = S[j, swap(j')] with the symmetric
        # S[j, j''] = <Lw_j M[pa_j, pa_j'']^2 Lw_j''>; M_ij^2 = X_i Y_j for i <= j, so S is one matrix
        # product, used where pa_j <= pa_j'' and mirrored elsewhere (half the work of two products).
        G, H = self.G, self.H
        for out, Z in ((G, X), (H, Y)):
            o = out.reshape(2, T, K, P)
            np.multiply(self.Bw, Z[0:2 * T:2][::-1, None, :], out=o[0])  # f rows: local 2T-2, ..., 0
            np.multiply(self.Cw, Z[1:2 * T:2][::-1, None, :], out=o[1])  # s rows: local 2T-1, ..., 1
        S = G @ H.T
        S = np.where(self.upper_s, S, S.T)
        if bad.size:  # the explicit blocks, position pair by position pair
            Lb, sq = self.Lw[:, bad], blk * blk
            live = np.any(sq != 0, axis=2)  # position pairs not separated by a cut in every bad unit
            for i1, j1 in enumerate(self._slots_at):
                W1 = Lb[j1]
                for i2 in np.nonzero(live[i1, i1:])[0] + i1:
                    j2 = self._slots_at[i2]
                    c = ((W1 * sq[i1, i2].real) @ Lb[j2].T) + 1j * ((W1 * sq[i1, i2].imag) @ Lb[j2].T)
                    S[np.ix_(j1, j2)] += c
                    if i2 != i1:
                        S[np.ix_(j2, j1)] += c.T
        Q = S[:, self.swap]
        Q /= P
        t2 = np.concatenate([t, t])
        Jm = np.eye(2 * KT, dtype=complex) - (ph2[:, None] * Q) * t2
        # phi = 1 - kappa t u v: d(-phi Avg)/du = kappa t v Avg, d(-phi Avg)/dv = kappa t u Avg
        i = np.arange(KT)
        Jm[i, i] += kap * t * v * Avg[:KT]
        Jm[i, KT + i] += kap * t * u * Avg[:KT]
        Jm[KT + i, i] += kap * t * v * Avg[KT:]
        Jm[KT + i, KT + i] += kap * t * u * Avg[KT:]
        return F, Jm

    def _finish(self, zeta: complex, w: complex, x: np.ndarray, noise: float = 0.0) -> _XSol | None:
        try:
            diag, _ = self._inverse(w, x, False)
        except np.linalg.LinAlgError:
            return None
        Mloc = diag[:2 * self.T + 3]  # x and the f/s positions
        if not (np.all(np.isfinite(Mloc)) and np.all(np.isfinite(x))):
            return None
        # relative test with an absolute floor per position: exact zeros (decoupled degenerate units) come
        # out as rounding noise of either sign
        mag = np.abs(Mloc, out=self.tri.w1[:2 * self.T + 3])
        floor = 1e-13 * np.max(mag, axis=1, keepdims=True)
        tol = _branch_tol(noise)
        mag *= tol
        mag += floor
        if np.any(Mloc.imag < -mag) or not _physical_im(x, tol):
            return None
        s = np.mean(diag[0]) / w  # M_xx = w (W W^T - w^2)^{-1} per unit
        if not np.isfinite(s):
            return None
        return _XSol(complex(zeta), x, complex(s))

    def _newton(self, zeta: complex, x0: np.ndarray) -> _XSol | None:
        self.budget.spend()
        w = np.sqrt(complex(zeta))
        found = _newton_solve(lambda x, jac: self._residual_jacobian(w, x, jac), x0, chord=True)
        return None if found is None else self._finish(zeta, w, found[0], found[2])

    def step(self, zeta: complex, prev: _XSol, x0=None) -> _XSol | None:
        if not zeta.imag > 0:
            return None
        return self._newton(zeta, prev.x if x0 is None else x0)

    def far(self, zeta: complex) -> _XSol:
        x0 = np.zeros(2 * self.K * self.T, dtype=complex)  # no self-energy far away
        sol = self._newton(complex(zeta), x0)
        if sol is None:
            raise _SolveError(f"exact product solver failed far from the spectrum at zeta={zeta}")
        return sol


def _exact_product_moments(law: _Law, T: int) -> tuple[float, float]:
    """(M1, M2) of W_T W_T^T from the exact recursion (see ``product_moments_exact``)."""
    a2, Bq, Cq, s, P, kap = law.a2, law.Bq, law.Cq, law.s2, law.P, law.kappa
    Ea2, Ea4 = a2.mean(), (a2 * a2).mean()
    Eb, Ec = Bq.mean(axis=1), Cq.mean(axis=1)  # (K,)
    Eab, Eac = (Bq * a2).mean(axis=1), (Cq * a2).mean(axis=1)
    EBB, ECC = Bq @ Bq.T / P, Cq @ Cq.T / P
    sc, sb = s * Ec, s * Eb
    cov_cc = ECC - np.outer(Ec, Ec)
    m1 = Ea2 + np.sum(s * Eb * Ec)
    mu1 = mu2 = delta = 1.0  # X_0 = I
    for _ in range(T):
        mu2_new = (Ea2 * Ea2 * mu2 + (Ea4 - Ea2 * Ea2) * delta
                   + 2.0 * np.sum(s * (Ec * Eab * mu1 * mu1
                                       + Eb * (Ea2 * Ec * mu2 + (Eac - Ea2 * Ec) * delta)))
                   + (sc @ EBB @ sc) * mu1 * mu1 + (sb @ Ec) ** 2 * mu2 + (sb @ cov_cc @ sb) * delta
                   - kap * np.sum((s * Eb * Ec) ** 2) * mu1 * mu1)
        delta_new = Ea4 * delta + 2.0 * np.sum(s * Eab * Ec) * mu1 * mu1 + (sc @ EBB @ sc) * mu1 * mu1
        mu1, mu2, delta = m1 * mu1, mu2_new, delta_new
    return float(mu1), float(mu2)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def moments(a, b, c, sigma, orthogonal: bool) -> tuple[float, float]:
    """First two moments of the squared singular values of J = A + sum_k B_k U_k C_k (n -> infinity).

    Returns (m1, m2) with m1 = lim (1/n) E tr(J J^T), m2 = lim (1/n) E tr((J J^T)^2), as expectations over
    the population (a (P,), b (K, P), c (K, P); sigma (K,); column p = one unit's joint sample):

        m1 = E[a^2] + sum_k s_k E[b_k^2] E[c_k^2] ,                       s_k = sigma_k^2
        m2 = E[a^4] + 2 sum_k s_k ( E[c_k^2] E[a^2 b_k^2] + E[b_k^2] E[a^2 c_k^2] )
             + sum_{k,l} s_k s_l ( E[c_k^2] E[c_l^2] E[b_k^2 b_l^2] + E[b_k^2] E[b_l^2] E[c_k^2 c_l^2] )
             - kappa sum_k s_k^2 E[b_k^2]^2 E[c_k^2]^2 ,                   kappa = 1 orthogonal, 0 Gaussian.

    Derivation: expand tr(J J^T J J^T); a term survives only if every U_k is paired with a U_k^T in a
    non-crossing way. Two-U terms give the second line; the four-U terms tr(X_k X_k^T X_l X_l^T) and
    tr(X_k^T X_k X_l^T X_l) (X_k = B_k U_k C_k) give E[c_k^2]E[c_l^2]E[b_k^2 b_l^2] resp. the mirror term by
    freeness of U_k C_k^2 U_k^T from the diagonals; for k = l the free mixed moment
    phi(xyxy) = phi(x^2)phi(y)^2 + phi(x)^2 phi(y^2) - phi(x)^2 phi(y)^2 (x = B^2, y = U C^2 U^T, with
    phi(y^2) = s^2 (E c^4 + (1 - kappa) E[c^2]^2)) gives the kappa term. For K = 1 and a, b, c independent
    this is theory.md eq. (11); the joint moments E[a^2 b^2], E[a^2 c^2], E[b_k^2 b_l^2] are what matter
    when a, b, c depend on each other within a unit (docs/theory.md eq. (T23)).
    """
    return _moments(_Law(a, b, c, sigma, orthogonal))


def product_moments(m1: float, m2: float, T: int) -> tuple[float, float]:
    """m1 and m2 of W W^T for W = J_T ... J_1 under S-multiplicativity (theory.md eq. (13)).

    From S_J(z) = 1/m1 + (m1^2 - m2)/m1^3 z + O(z^2) and S_W = S_J^T; the second moment only depends on
    the first two S coefficients, so given (13) this is exact:

        M1 = m1^T ,   M2 = m1^(2T) (1 + T v) ,   v = (m2 - m1^2)/m1^2 ,

    i.e. the normalized variance of the product is exactly T v (Fuss-Catalan check: m1 = 1, m2 = 2 gives
    M2 = T + 1). Caveat: (13) needs the J_t to be asymptotically free; for J = A + sum_k B_k U_k C_k with
    fresh diagonals it holds only when a^2 and all c_k^2 are constant across units (see
    ``product_moments_exact`` for the exact M2 in general; M1 = m1^T is always exact).
    """
    T = int(T)
    if T < 1:
        raise ValueError("T must be >= 1")
    v = (m2 - m1 * m1) / (m1 * m1)
    return float(m1 ** T), float(m1 ** (2 * T) * (1.0 + T * v))


def product_moments_exact(a, b, c, sigma, orthogonal: bool, T: int) -> tuple[float, float]:
    """Exact large-n (M1, M2) of W W^T for W = J_T ... J_1, J_t independent copies of J (fresh U's and
    fresh diagonals at every step), without assuming freeness between steps.

    Why (13) is not exact in general: in J_2 J_1 = A_2 A_1 + A_2 B_1 U_1 C_1 + B_2 U_2 C_2 A_1 + ..., the
    diagonals of consecutive steps (A_2 next to A_1, C_2 next to B_1) meet without a Haar rotation in between;
    independent diagonal matrices commute and are classically, not freely, independent. The exact recursion
    carries X_t = W_t W_t^T through three numbers, mu1 = tr X/n, mu2 = tr X^2/n and the diagonal second moment
    delta = sum_i X_ii^2 / n (X_0 = I: all 1). With s_k = sigma_k^2, E over one unit's (a, b, c), the fresh
    step gives X'_ii = a_i^2 X_ii + sum_k s_k b_ki^2 E[c_k^2] mu1 + o(1), and

        mu1'   = m1 mu1
        delta' = E[a^4] delta + 2 sum_k s_k E[a^2 b_k^2] E[c_k^2] mu1^2
                 + sum_kl s_k s_l E[c_k^2]E[c_l^2]E[b_k^2 b_l^2] mu1^2
        mu2'   = E[a^2]^2 mu2 + Var(a^2) delta
                 + 2 sum_k s_k ( E[c_k^2] E[a^2 b_k^2] mu1^2
                                 + E[b_k^2] (E[a^2]E[c_k^2] mu2 + Cov(a^2, c_k^2) delta) )
                 + sum_kl s_k s_l ( E[c_k^2]E[c_l^2]E[b_k^2 b_l^2] mu1^2
                                    + E[b_k^2]E[b_l^2] (E[c_k^2]E[c_l^2] mu2 + Cov(c_k^2, c_l^2) delta) )
                 - kappa sum_k s_k^2 E[b_k^2]^2 E[c_k^2]^2 mu1^2 .

    T = 1 reproduces ``moments``. delta enters mu2' only through Var(a^2), Cov(a^2, c_k^2), Cov(c_k^2, c_l^2):
    when a^2 and the c_k^2 are constant across units this equals ``product_moments`` (the free result).
    """
    T = int(T)
    if T < 1:
        raise ValueError("T must be >= 1")
    return _exact_product_moments(_Law(a, b, c, sigma, orthogonal), T)


def _solver(law: _Law, T: int, method: str) -> _Continuation:
    if T < 1:
        raise ValueError("steps must be >= 1")
    if method not in ("free", "exact"):
        raise ValueError(f"method must be 'free' or 'exact', got {method!r}")
    if T == 1:
        return _OneStep(law)
    return _FreeProduct(law, T) if method == "free" else _ExactProduct(law, T)


def _solve_points(solver: _Continuation, zetas: np.ndarray, what: str, stop: bool = False) -> list:
    """solver.solve_along in one BLAS thread; warns once if some points could not be solved."""
    with _one_blas_thread():
        sols = solver.solve_along(zetas, stop)
    failed = sum(sol is None for sol in sols)
    if failed and not stop:
        warnings.warn(f"spectrum.{what}: the continuation could not reach {failed} of {len(sols)} points "
                      "(returned as NaN)", RuntimeWarning, stacklevel=3)
    return sols


def stieltjes(a, b, c, sigma, orthogonal: bool, zeta, steps: int = 1, method: str = "free") -> np.ndarray:
    """Stieltjes transform s(zeta) = lim (1/n) E tr (W W^T - zeta)^{-1} at points zeta with Im zeta > 0.

    W = J (steps = 1): from the Hermitized fixed point, docs/theory.md eq. (T24), s = <g1>/sqrt(zeta).
    W = J_T ... J_1 (steps = T): method "free" uses the S-transform subordination eq. (T32) (theory.md
    eq. (13)); method "exact" uses the linearization eq. (T33) (see ``density``). Points are solved in the
    order given, each continued from the previous one (order them along a path for speed). zeta:
    array-like; returns a complex array of the same shape (NaN, with a RuntimeWarning, at points the
    continuation could not reach; see ``density``).
    """
    law = _Law(a, b, c, sigma, orthogonal)
    z = np.asarray(zeta, dtype=complex)
    if np.any(z.imag <= 0):
        raise ValueError("stieltjes: need Im zeta > 0")
    solver = _solver(law, int(steps), method)
    sols = _solve_points(solver, z.ravel(), "stieltjes")
    return np.array([np.nan if sol is None else sol.s for sol in sols], dtype=complex).reshape(z.shape)


def density(a, b, c, sigma, orthogonal: bool, lam: np.ndarray, steps: int = 1, eps: float = 1e-6,
            method: str = "free") -> np.ndarray:
    """Density rho(lambda) of the squared singular values of J (steps = 1) or W_T = J_T...J_1 (steps = T).

    rho(lambda) = Im s(zeta) / pi at zeta = lambda (1 + i eps); eps is a relative smoothing (the Poisson
    kernel width at lambda is eps * lambda; products concentrate mass at tiny lambda, where an absolute width
    would lose it), so the error is O(eps) relative where rho is smooth.

    steps = 1 (exact): s_J = <g1>/w, w^2 = zeta, from docs/theory.md eq. (T24): per unit
        [[g1, g12], [g12, g2]] = [[-w - Sigma1_p, a_p], [a_p, -w - Sigma2_p]]^{-1},
        Sigma1_p = sum_k sigma_k^2 phi_k b_kp^2 beta_k, Sigma2_p = sum_k sigma_k^2 phi_k c_kp^2 alpha_k,
        alpha_k = <b_k^2 g1>, beta_k = <c_k^2 g2>, kappa sigma_k^2 alpha_k beta_k phi_k^2 + phi_k - 1 = 0
        (kappa = 0 Gaussian: phi = 1, the matrix Dyson equation; kappa = 1 orthogonal: the root continuous
        from phi = 1 at zeta -> infinity).
    steps = T, method "free": S_W = S_J^T (theory.md eq. (13)) through eq. (T32):
        v^T ((1 + psi_J(v))/psi_J(v))^(T-1) = 1/zeta,  s_W = -(1 + psi_J(v))/zeta,
        psi_J(v) = -1 - s_J(1/v)/v.
        Exact only if the J_t are asymptotically free, which for fresh diagonals needs a^2 and all c_k^2
        constant across units (e.g. deterministic forget gate f and reset gate r'); otherwise an
        approximation (see ``product_moments_exact``).
    steps = T, method "exact": Hermitian linearization eq. (T33) of the product (per unit a (2T+4)-dimensional
        tridiagonal pencil, 2KT unknowns), exact for independent steps; the per-unit tuples across steps are
        one random sample (seed 0) of the product law (Monte Carlo error O(P^-1/2), like the population
        itself). Cost per point grows like K^2 T^2 P (measured on 2 cores: T = 10, K = 1-3, P = 4000,
        60 points in 1.4-1.8 s; one step, 200 points: 0.2-0.3 s).

    lam: grid of lambda > 0 (any order and shape); returns rho with the same shape. The grid is swept from its
    largest value down, each point continued from the previous one.

    Normalization and degenerate laws: rho is the absolutely continuous part of the spectral law,
    int_0^inf rho = 1 - zero_atom(...) (= 1 without an atom at 0; an atom at 0 needs a degenerate population,
    e.g. a positive fraction of zero rows a_p = b_kp = 0). Terms with sigma_k = 0 or an all-zero b_k or c_k
    row are dropped (they add nothing to J). Atoms away from 0 only occur for degenerate laws (J = sigma O
    with identical units: all mass at sigma^2; units with all b_kp = c_kp = 0: mass 1/P at a_p^2; no random
    term at all: J = A); they come out as Lorentzians of relative width eps, i.e. as the smoothed measure.
    Points that the continuation cannot reach within a bounded amount of work are returned as NaN with a
    RuntimeWarning. In the laws tested (identical units, zero rows, hard edges, atoms) this happened only at
    extreme points: lambda below ~1e-9 of the scale when A = 0 and U is orthogonal (J invertible: the system
    loses its leading order at zeta = 0 and becomes ill-conditioned) and below ~1e-50 of the scale for long
    products (floating-point range).
    """
    law = _Law(a, b, c, sigma, orthogonal)
    lam = np.asarray(lam, dtype=float)
    if np.any(~np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("density: the grid lam must be finite and > 0")
    if not 1e-9 <= eps <= 0.1:
        raise ValueError("eps must lie in [1e-9, 0.1]")  # below 1e-9 the branch checks lose their margin
    solver = _solver(law, int(steps), method)
    if lam.size == 0:
        return np.zeros_like(lam)
    flat = lam.ravel()
    order = np.argsort(-flat, kind="stable")  # descending: start outside the spectrum's bulk
    # eta proportional to lambda: products pile up mass near 0 (rho ~ lambda^(-T/(T+1))), and an absolute eta
    # would smear a finite fraction of it away; relative smoothing keeps rho accurate at every scale.
    sols = _solve_points(solver, flat[order] * (1.0 + 1j * eps), "density")
    rho = np.empty(flat.size)
    rho[order] = [np.nan if sol is None else max(sol.s.imag, 0.0) / np.pi for sol in sols]
    return rho.reshape(lam.shape)


def zero_atom(a, b, c, sigma, orthogonal: bool, steps: int = 1, method: str = "free",
              r_min: float = 1e-14) -> float:
    """Mass of the atom at lambda = 0 of the squared singular values of J (steps = 1) or W_T (steps = T).

    atom = lim_{zeta -> 0} (-zeta s(zeta)), evaluated along the ray zeta = r e^{0.6 i pi} (r geometric, 8
    points per decade, down to r_min * scale with scale = max(m1, sqrt(m2))^T) with s from eq. (T24), or for
    steps = T with method "exact" from eq. (T33). The continuous part adds C r^q (q = 1 - p for a density
    ~ lambda^(-p) at 0); this power-law correction is removed by Aitken's delta^2 extrapolation over the last
    decades (applied twice over five decades, which also removes the next correction ~ r^(2q)), leaving
    errors ~1e-6 or below for one step and short products in the cases tested. Long exact products converge
    slowly (q ~ 1/(T+1), with logarithmic corrections): measured errors 3e-5 to 2e-3 at T = 10 for
    populations without any atom. With method "free" and steps > 1 the atom of J is returned: the atom at 0
    of a free product is the largest atom of its factors (Belinschi 2003). For the actual untied product
    (method "exact") the atom grows with T, because the factors' kernels are aligned with the unit axes
    rather than in general position: e.g. 20 % zero rows and 10 % zero columns per step give 0.200 for J
    and 0.278 for J_2 J_1 (finite n = 1000: 0.272). An atom needs a degenerate population, e.g. a positive
    fraction of units with a_p = 0 and all b_kp = 0.
    If the continuation stops before r_min (possible only very close to 0, where the system is
    ill-conditioned, e.g. for A = 0 and J invertible), the deepest decades reached are used, provided they
    lie at least 8 decades below the scale or -zeta s has settled there (changes below 1e-5 per decade,
    shrinking at least 2x per decade, so that the extrapolation holds); otherwise NaN is returned with a
    RuntimeWarning.
    """
    law = _Law(a, b, c, sigma, orthogonal)
    T = int(steps)
    solver = _solver(law, T, method)
    if T > 1 and method == "free":
        solver = _OneStep(law)
    n_pts = int(8 * np.log10(100.0 / r_min)) + 1
    radii = np.geomspace(100.0 * solver.scale, r_min * solver.scale, n_pts)
    sols = _solve_points(solver, radii * np.exp(0.6j * np.pi), "zero_atom", stop=True)
    # the deepest decades reached: near zeta = 0 the system can become too ill-conditioned to solve (A = 0
    # with an invertible J, e.g. J = sigma O); then the limit is accepted only where it has settled
    k = next((i for i, sol in enumerate(sols) if sol is None), len(sols))
    f = np.array([(-sol.zeta * sol.s).real for sol in sols[k - 1::-8][:5][::-1]]) if k >= 17 else np.zeros(0)
    d1, d2 = (f[-2] - f[-3], f[-1] - f[-2]) if f.size >= 3 else (np.nan, np.nan)
    settled = abs(d1) + abs(d2) < 1e-8 or (abs(d2) < 1e-5 and 0 < d2 / d1 < 0.5)  # small, shrinking fast
    if k < 17 or (k < len(sols) and not (radii[k - 1] <= 1e-8 * solver.scale or settled)):
        warnings.warn(f"spectrum.zero_atom: the continuation stopped at |zeta| = "
                      f"{radii[min(k, n_pts - 1)]:.3g}, before -zeta s(zeta) settled (returned NaN)",
                      RuntimeWarning, stacklevel=2)
        return float("nan")
    return float(np.clip(_extrapolate(f), 0.0, 1.0))


def _aitken(f: np.ndarray):
    """Aitken's delta^2 of a sequence, or None where it is not geometric (0 < ratio < 1)."""
    d1, d2 = f[1:-1] - f[:-2], f[2:] - f[1:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = d2 / d1
    if not np.all((ratio > 0) & (ratio < 1)):
        return None
    return f[2:] - d2 * d2 / (d2 - d1)


def _extrapolate(f: np.ndarray) -> float:
    """Limit of f = -zeta s(zeta) at zeta = 0 from its values one decade apart (deepest last):
    f ~ atom + C r^q (q = 1 - p for a density ~ lambda^(-p) at 0) with corrections ~ r^(2q). Aitken's
    delta^2 removes the C r^q term; applied twice (over five decades) it also removes the next one, which
    matters when q is small (products: q ~ 1/(T+1); measured error 3e-5 instead of 1.4e-3 for
    0.5 (I + O), T = 10)."""
    if abs(f[-1] - f[-2]) < 1e-12:  # settled
        return f[-1]
    a1 = _aitken(f)
    if a1 is None:
        return f[-1]
    if a1.size >= 3 and abs(a1[-1] - a1[-2]) > 1e-12:
        a2 = _aitken(a1)
        if a2 is not None:
            return a2[-1]
    return a1[-1]
