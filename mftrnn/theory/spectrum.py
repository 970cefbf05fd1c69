"""Large-width spectrum of random state-to-state Jacobians and of their products (theory.md §4).

The random matrix (n x n, n -> infinity) is

    J = A + sum_{k=1..K} B_k U_k C_k ,

with A, B_k, C_k diagonal and U_k independent of each other and of the diagonals, either Gaussian
(entries i.i.d. N(0, sigma_k^2 / n)) or orthogonal (sigma_k times a Haar-orthogonal matrix). The law of
the diagonals is given as a *population*: arrays ``a`` (P,), ``b`` (K, P), ``c`` (K, P); column p is one
unit's joint sample (a_p, b_{1,p}, ..., c_{1,p}, ...), units are i.i.d. draws of that joint law (entries
may depend on each other within a unit). Everything below is exact in the limit n -> infinity for the
law "uniform over the P population samples"; P only controls how well that law approximates the
underlying continuous one. Only a^2, b_k^2, c_k^2 and sigma_k^2 matter.

Products W_T = J_T ... J_1 of independent copies (fresh U's and fresh diagonals at every step, i.e. untied
weights). theory.md eq. (13) assumes the J_t are asymptotically free, so that S-transforms multiply,
S_{W W^T} = S_{J J^T}^T. **That is exact only when a^2 and all c_k^2 are constant across units** (e.g.
a deterministic forget gate A = f I and C_k = I; any B_k): in J_2 J_1 the diagonals A_2 and A_1, and C_2
and B_1, meet without a Haar rotation between them, and independent diagonal matrices are classically,
not freely, independent.
M1 = m1^T is always exact; M2 and the density are not. This module offers both: method="free" (the
S-transform, as eq. (13)) and method="exact" (a linearization of the product, (S3) below), and the exact
second moment ``product_moments_exact``. Measured (P = 2000, GRU-like law with dependent f, tanh', r',
m1 = 1, v = 1.40, T = 10): M2 = 14.98 (free) vs 16.81 (exact); Kolmogorov distance of the free density
to finite-n products 0.010 vs 0.004 for the exact one; for a bimodal forget gate the free density is off
by a Kolmogorov distance of 0.09-0.15 while the exact one matches finite matrices to < 0.011.

Public functions
----------------
``moments``                m1, m2 of J J^T in closed form (free probability / Wick).
``product_moments``        M1, M2 of W_T W_T^T from m1, m2 of one step under eq. (13) (S-transform).
``product_moments_exact``  M1, M2 of W_T W_T^T, exact (a three-number recursion).
``stieltjes``              s(zeta) = lim (1/n) E tr (W W^T - zeta)^{-1} at complex points.
``density``                density of the squared singular values of J (steps=1) or W_T (steps=T).
``zero_atom``              mass of the atom at lambda = 0 (if any); ``density`` returns the continuous part.
Nothing raises NotImplementedError: Gaussian and orthogonal U_k, any K, dependent (a, b, c) are all exact.

Method (no sampling of large matrices)
--------------------------------------
Hermitization. The squared singular values of J are the squares of the eigenvalues of
H = [[0, J], [J^T, 0]] (2n x 2n), and the upper-left block of the resolvent is

    [(H - w)^{-1}]_{11} = w (J J^T - w^2)^{-1} ,   so   s(w^2) = (1/n) tr[(H - w)^{-1}]_{11} / w .

H = H0 + sum_k sigma_k D_k Theta_k D_k with H0 = [[0, A], [A, 0]], D_k = diag(B_k, C_k) and
Theta_k = [[0, U_k'], [U_k'^T, 0]] (U_k' = U_k / sigma_k). Write the expected resolvent per unit p as the
2x2 matrix M_p = [[g1_p, g12_p], [g12_p, g2_p]] (it is block-diagonal in the unit index for n -> inf).
With operator-valued free probability over the algebra of per-unit 2x2 matrices (the Gaussian case is the
matrix Dyson equation; for Haar U_k, Theta_k is free from the diagonals with amalgamation over M_2(C), so
its cumulants with values in the per-unit algebra are its M_2(C)-valued ones (Nica-Shlyakhtenko-Speicher),
and the M_2(C)-valued R-transform of the Hermitized Haar unitary only sees the diagonal of its argument
because a Haar unitary is R-diagonal) one gets the closed system, for Im w > 0:

    M_p      = [[-w - Sigma1_p, a_p], [a_p, -w - Sigma2_p]]^{-1}                         (S1)
    Sigma1_p = sum_k sigma_k^2 phi_k b_{k,p}^2 beta_k ,   Sigma2_p = sum_k sigma_k^2 phi_k c_{k,p}^2 alpha_k
    alpha_k  = < b_k^2 g1 > ,   beta_k = < c_k^2 g2 >        (< . > = average over the population)
    kappa sigma_k^2 alpha_k beta_k phi_k^2 + phi_k - 1 = 0 ,    kappa = 0 Gaussian, 1 orthogonal.

For Gaussian U_k, phi_k = 1 and (S1) is the matrix Dyson equation. For orthogonal U_k,
phi_k = 2 / (1 + sqrt(1 + 4 sigma_k^2 alpha_k beta_k)) comes from the M_2(C)-valued R-transform of
[[0, u], [u*, 0]] (u Haar unitary: alternating free cumulants (-1)^{m-1} Catalan_{m-1}),
R(beta)_{11} = beta_22 * 2 / (1 + sqrt(1 + 4 beta_11 beta_22)), R(beta)_{22} likewise. Check: for A = 0,
B = C = I, J = sigma O and (S1) gives the two atoms +-sigma of H exactly. Then

    s_J(zeta) = <g1> / w ,   w = sqrt(zeta) (first quadrant),   rho_J(lambda) = Im s_J(lambda + i0) / pi .

(S1) has only 3K complex unknowns (alpha, beta, phi). It is solved by Newton's method with an analytic
Jacobian, continued along a path of spectral parameters (far from the spectrum down to the real axis, then
along the lambda grid, previous solution as the start; a failed step is bisected, and a damped fixed-point
iteration, which converges to the physical solution for any Im w > 0, is the last resort). Newton is used
because the plain damped iteration slows down without bound as Im w -> 0. Every accepted solution is
checked to be on the physical branch: Im g1_p, Im g2_p >= 0 and Im(phi alpha), Im(phi beta) >= 0.

Products, method "free" (eq. (13)). With psi(u) = int u l / (1 - u l) d mu(l) = -1 - s(1/u)/u,
chi = psi^{-1} and S(z) = chi(z) (1 + z) / z, S_W = S_J^T gives chi_W(z) = chi_J(z)^T ((1 + z)/z)^{T-1}.
For a target zeta, u = 1/zeta, the subordination point v = chi_J(psi_W(u)) solves

    v^T ((1 + psi_J(v)) / psi_J(v))^{T-1} = 1/zeta ,   then  s_W(zeta) = -(1 + psi_J(v)) / zeta ,     (S2)

with psi_J(v) = -1 - s_J(1/v) / v from (S1) at zeta_J = 1/v (in the upper half-plane). (S2) is solved for
v by Newton in log form (residual T log v + (T-1) log((1+psi)/psi) + log zeta, modulo 2 pi i), with the
same continuation, starting from v = m1^{T-1}/zeta far away.

Products, method "exact". W is the Schur complement of a pencil linear in the J_t: with the block
bidiagonal B (I on the diagonal, J_T, ..., J_1 above it), (B^{-1})_{0T} = J_T ... J_1, and the symmetric
pencil L = [[-w I_2, E], [E^T, [[0, B], [B^T, 0]]]] (E couples the two extra blocks x, y to the ends of
the chain) has (L^{-1})_{xx} = w (W W^T - w^2)^{-1} up to the sign of W. Ordering the blocks as
x, s_0, f_0, s_1, f_1, ..., s_T, f_T, y makes the per-unit pencil a symmetric tridiagonal matrix of size
2T + 4 with J_t's a_t on the off-diagonal (f_{T-t}, s_{T-t+1}). The same operator-valued argument as for
(S1), now over per-unit (2T+4) x (2T+4) matrices, gives

    M_p = (L0_p(w) - Sigma_p)^{-1} ,  Sigma_p = diag(..., sum_k s_k phi_tk b_tkp^2 beta_tk at f_{T-t},
                                                    sum_k s_k phi_tk c_tkp^2 alpha_tk at s_{T-t+1}, ...)
    alpha_tk = < b_tk^2 M[f,f] > , beta_tk = < c_tk^2 M[s,s] > ,
    kappa s_k alpha_tk beta_tk phi_tk^2 + phi_tk = 1 ,
    s_W(zeta) = < M_p[x, x] > / w ,                                                           (S3)

where unit p carries one independent draw (a_t, b_t, c_t) per step (a random permutation of the population
per step). The 3KT unknowns are solved by Newton (per-unit tridiagonal inverses in O(T^2) vector
operations) with the same continuation. T = 1 reproduces (S1).

Conventions: ``density`` is the absolutely continuous part of the spectral measure (it integrates to
1 - zero_atom(...) over (0, inf), i.e. to 1 when there is no atom, which is the generic case: an atom
needs a degenerate population, e.g. a positive fraction of zero rows a_p = b_kp = 0). It is evaluated at
zeta = lambda (1 + i eps), i.e. smoothed on the relative scale eps (products concentrate mass at tiny
lambda, where an absolute smoothing scale would lose it). Equation labels (S1)-(S3) are this module's;
theory.md eqs. (11), (13) are the note's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["moments", "product_moments", "product_moments_exact", "stieltjes", "density", "zero_atom"]

_NEWTON_TOL = 1e-12  # relative Newton step at which a solve is converged
_NEWTON_MAXIT = 40
_BRANCH_TOL = 1e-10  # relative tolerance of the Im >= 0 (physical branch) checks (well below eps)
_MAX_DEPTH = 24  # bisections of one continuation step before giving up
_MAX_TRIES = 200  # solves spent on one continuation step before giving up


# --------------------------------------------------------------------------------------------------
# Population law
# --------------------------------------------------------------------------------------------------
class _Law:
    """Validated population of one Jacobian step; only a^2, b^2, c^2 and sigma^2 enter the spectrum."""

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
        self.P, self.K = P, K
        self.a = a
        self.a2 = a * a  # (P,)
        self.Bq = b * b  # (K, P)
        self.Cq = c * c  # (K, P)
        self.s2 = sigma * sigma  # (K,)
        self.kappa = 1.0 if orthogonal else 0.0
        self.orthogonal = bool(orthogonal)
        self.m1, self.m2 = _moments(self)
        keep = (self.s2 > 0) & np.any(self.Bq > 0, axis=1) & np.any(self.Cq > 0, axis=1)
        self.Bq, self.Cq, self.s2 = self.Bq[keep], self.Cq[keep], self.s2[keep]
        self.K = int(keep.sum())


def _moments(law: _Law) -> tuple[float, float]:
    """m1, m2 of J J^T (see ``moments``)."""
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


# --------------------------------------------------------------------------------------------------
# One step: the Hermitized fixed point (S1)
# --------------------------------------------------------------------------------------------------
@dataclass
class _Sol:
    """Converged solution of (S1) at zeta = w^2."""

    zeta: complex
    x: np.ndarray  # (3K,) complex: alpha (K), beta (K), phi (K)
    s: complex  # Stieltjes transform s_J(zeta)
    ds: complex  # d s_J / d zeta
    psi: complex  # psi_J(1/zeta) = -1 - zeta s_J(zeta), computed without cancellation (small |psi|)
    opsi: complex  # 1 + psi = -zeta s_J(zeta) = -w <g1>, accurate also when psi ~ -1 (zeta -> 0)


def _unpack(law: _Law, x):
    K = law.K
    return x[:K], x[K:2 * K], x[2 * K:]


def _blocks(law: _Law, w: complex, x: np.ndarray, with_psi: bool = False):
    """Per-unit resolvent entries g1, g2, g12^2 (each (P,)) for given unknowns; optionally also
    psi_p = -1 - w g1_p = (yy Sigma1_p + a_p^2)/det_p (the same quantity without the cancellation)."""
    al, be, ph = _unpack(law, x)
    t = law.s2 * ph  # (K,)
    sig1 = (t * be) @ law.Bq  # (P,)
    sig2 = (t * al) @ law.Cq  # (P,)
    xx, yy = -w - sig1, -w - sig2
    det = xx * yy - law.a2
    g1, g2 = yy / det, xx / det
    g12sq = law.a2 / (det * det)
    if with_psi:
        return g1, g2, g12sq, (yy * sig1 + law.a2) / det
    return g1, g2, g12sq


def _residual_jacobian(law: _Law, w: complex, x: np.ndarray):
    """Residual F(x) of (S1) (3K,) and its Jacobian dF/dx (3K, 3K)."""
    K, P = law.K, law.P
    al, be, ph = _unpack(law, x)
    g1, g2, g12sq = _blocks(law, w, x)
    Bq, Cq, s2, kap = law.Bq, law.Cq, law.s2, law.kappa
    F = np.concatenate([al - Bq @ g1 / P, be - Cq @ g2 / P, kap * s2 * al * be * ph * ph + ph - 1.0])
    # dM = M (dw + dSigma) M per unit: dg1 = g1^2 dS1 + g12^2 dS2, dg2 = g12^2 dS1 + g2^2 dS2.
    g1sq, g2sq = g1 * g1, g2 * g2
    P11 = (Bq * g1sq) @ Bq.T / P  # <b_k^2 g1^2 b_l^2>  (K, K)
    P12 = (Bq * g12sq) @ Cq.T / P  # <b_k^2 g12^2 c_l^2>
    P21 = (Cq * g12sq) @ Bq.T / P
    P22 = (Cq * g2sq) @ Cq.T / P
    tp, tb, ta = s2 * ph, s2 * be, s2 * al  # dSigma1/dbeta_l ~ tp_l b_l^2, dSigma1/dphi_l ~ tb_l b_l^2, ...
    Jm = np.zeros((3 * K, 3 * K), dtype=complex)
    I = np.eye(K)
    Jm[:K, :K] = I - P12 * tp
    Jm[:K, K:2 * K] = -P11 * tp
    Jm[:K, 2 * K:] = -(P11 * tb + P12 * ta)
    Jm[K:2 * K, :K] = -P22 * tp
    Jm[K:2 * K, K:2 * K] = I - P21 * tp
    Jm[K:2 * K, 2 * K:] = -(P21 * tb + P22 * ta)
    Jm[2 * K:, :K] = np.diag(kap * s2 * be * ph * ph)
    Jm[2 * K:, K:2 * K] = np.diag(kap * s2 * al * ph * ph)
    Jm[2 * K:, 2 * K:] = np.diag(2.0 * kap * s2 * al * be * ph + 1.0)
    return F, Jm


def _physical(law: _Law, x: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> bool:
    """Physical branch: Im M_p >= 0 (resolvent of a symmetric matrix) and Im of the self-energies >= 0."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))):
        return False
    for g in (g1, g2):  # relative test, with a tiny absolute floor for entries that vanish exactly
        if np.any(g.imag < -_BRANCH_TOL * np.abs(g) - 1e-13 * np.max(np.abs(g))):
            return False
    al, be, ph = _unpack(law, x)
    for y in (ph * al, ph * be):
        if np.any(y.imag < -_BRANCH_TOL * np.abs(y)):
            return False
    return True


def _finish(law: _Law, zeta: complex, w: complex, x: np.ndarray, Jm: np.ndarray) -> _Sol | None:
    """Stieltjes transform and its zeta-derivative (implicit function theorem) at a converged x.

    Jm is the Jacobian of the last Newton iteration (at x up to the last, tiny, step): it only enters
    ds, which only steers the Newton iteration of (S2)."""
    K, P = law.K, law.P
    g1, g2, g12sq, psi_p = _blocks(law, w, x, with_psi=True)
    if not _physical(law, x, g1, g2):
        return None
    Fw = np.concatenate([-law.Bq @ (g1 * g1 + g12sq) / P, -law.Cq @ (g12sq + g2 * g2) / P, np.zeros(K)])
    try:
        dx = -np.linalg.solve(Jm, Fw)  # dx/dw  (3K,)
    except np.linalg.LinAlgError:
        return None
    al, be, ph = _unpack(law, x)
    dal, dbe, dph = dx[:K], dx[K:2 * K], dx[2 * K:]
    s2 = law.s2
    dsig1 = (s2 * (ph * dbe + be * dph)) @ law.Bq  # (P,)
    dsig2 = (s2 * (ph * dal + al * dph)) @ law.Cq
    G1 = g1.mean()
    dG1 = np.mean(g1 * g1 * (1.0 + dsig1) + g12sq * (1.0 + dsig2))  # d<g1>/dw
    s = G1 / w
    ds = (dG1 / w - G1 / (w * w)) / (2.0 * w)  # dw/dzeta = 1/(2w)
    psi = np.mean(psi_p)
    if not (np.isfinite(s) and np.isfinite(ds) and np.isfinite(psi)):
        return None
    return _Sol(complex(zeta), x, complex(s), complex(ds), complex(psi), complex(-w * G1))


def _newton_solve(residual_jacobian: Callable[[np.ndarray], tuple], x0: np.ndarray):
    """Newton's method on F(x) = 0 from x0, with a componentwise relative step test (alpha, beta ~ 1/|w|
    can be much smaller than phi ~ 1). Returns (x, Jacobian at the last step), or None on failure.

    Near zeta = 0 the Jacobian is nearly singular (at w = 0, alpha -> alpha t, beta -> beta / t is a
    symmetry when A = 0), so rounding noise can stay above the tolerance: a stalled tiny step is accepted.
    """
    x = np.array(x0, dtype=complex)
    last = np.inf
    for _ in range(_NEWTON_MAXIT):
        try:
            F, Jm = residual_jacobian(x)[:2]
            step = np.linalg.solve(Jm, -F)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        x = x + step
        rel = np.max(np.abs(step) / np.maximum(np.abs(x), 1e-300))
        if rel <= _NEWTON_TOL or (rel < 1e-7 and rel > 0.5 * last):
            return x, Jm
        last = rel
        if np.max(np.abs(x)) > 1e30:
            return None
    return None


def _newton(law: _Law, zeta: complex, x0: np.ndarray) -> _Sol | None:
    """Newton's method for (S1) at zeta from x0; None if it does not converge to the physical branch."""
    w = np.sqrt(complex(zeta))  # principal root: first quadrant for zeta in the upper half-plane
    found = _newton_solve(lambda x: _residual_jacobian(law, w, x), x0)
    return None if found is None else _finish(law, zeta, w, *found)


def _damped_fixed_point(law: _Law, zeta: complex, x0: np.ndarray, damping: float = 0.5,
                        maxit: int = 20000) -> _Sol | None:
    """Damped fixed-point iteration of (S1) (last resort; converges to the physical solution for Im w > 0,
    but slowly near the real axis), polished by Newton."""
    w = np.sqrt(complex(zeta))
    P = law.P
    x = np.array(x0, dtype=complex)
    for _ in range(maxit):
        al, be, ph = _unpack(law, x)
        g1, g2, _ = _blocks(law, w, x)
        new_al, new_be = law.Bq @ g1 / P, law.Cq @ g2 / P
        # phi = 1 / (1 + kappa sigma^2 alpha beta phi): the fixed-point form of its quadratic.
        new_ph = 1.0 / (1.0 + law.kappa * law.s2 * new_al * new_be * ph)
        new = np.concatenate([new_al, new_be, new_ph])
        if np.max(np.abs(new - x)) <= 1e-10 * np.max(np.abs(new)):
            return _newton(law, zeta, new)
        x = (1.0 - damping) * x + damping * new
    return _newton(law, zeta, x)


def _far_start(law: _Law, zeta: complex) -> np.ndarray:
    """Large-|zeta| asymptotics of (S1): g1, g2 ~ -1/w, phi ~ 1."""
    w = np.sqrt(complex(zeta))
    K = law.K
    return np.concatenate([-law.Bq.mean(axis=1) / w, -law.Cq.mean(axis=1) / w, np.ones(K)]).astype(complex)


def _scale(law: _Law) -> float:
    """A spectral scale: the root mean square squared singular value (> 0)."""
    return max(np.sqrt(max(law.m2, 0.0)), law.m1, 1e-300)


# --------------------------------------------------------------------------------------------------
# Continuation
# --------------------------------------------------------------------------------------------------
def _advance(step: Callable, prev, zeta: complex, depth: int = 0, budget: list | None = None):
    """Solve at zeta starting from the solution prev (at prev.zeta); bisect the step on failure.

    At most _MAX_DEPTH nested bisections and _MAX_TRIES solves in all (a region where every solve fails
    would otherwise cost 2^depth solves); None if that is not enough."""
    if budget is None:
        budget = [_MAX_TRIES]
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


def _descent_path(target: complex, y_far: float, per_decade: int = 4) -> np.ndarray:
    """Vertical path Re = Re(target), Im from y_far down to Im(target), geometric."""
    y0, y1 = y_far, max(target.imag, 1e-300)
    n = max(2, int(np.ceil(per_decade * np.log10(max(y0 / y1, 10.0)))) + 1)
    return target.real + 1j * np.geomspace(y0, y1, n)


class _Continuation:
    """Path continuation shared by the solvers. Subclasses define step(zeta, prev) (one warm-started solve,
    None on failure or off the physical branch), far(zeta) (a solve far from the spectrum) and scale."""

    scale: float

    def step(self, zeta: complex, prev):  # pragma: no cover - abstract
        raise NotImplementedError

    def far(self, zeta: complex):  # pragma: no cover - abstract
        raise NotImplementedError

    def rescue(self, zeta: complex, prev):
        """Last resort when bisection fails (subclasses may override)."""
        return None

    def descend(self, target: complex):
        """Solve at target by coming down vertically from far above it (robust, slower)."""
        y_far = 100.0 * (self.scale + abs(target))
        path = _descent_path(target, y_far)
        sol = self.far(complex(path[0]))
        for z in path[1:]:
            nxt = _advance(self.step, sol, complex(z))
            if nxt is None:
                nxt = self.rescue(complex(z), sol)
            if nxt is None:
                raise RuntimeError(f"spectrum: continuation failed at zeta={complex(z)}")
            sol = nxt
        return sol

    def solve_along(self, zetas: Sequence[complex]) -> list:
        """Solutions at zetas in order, each continued from the previous (falling back to a descent)."""
        out = []
        prev = None
        for z in zetas:
            z = complex(z)
            sol = _advance(self.step, prev, z) if prev is not None else None
            if sol is None:
                sol = self.descend(z)
            out.append(sol)
            prev = sol
        return out


class _OneStep(_Continuation):
    """Solver of (S1) with continuation; step(zeta, prev) is one Newton solve warm-started at prev."""

    def __init__(self, law: _Law):
        self.law = law
        self.scale = _scale(law)

    def step(self, zeta: complex, prev: _Sol) -> _Sol | None:
        if not zeta.imag > 0:
            return None
        return _newton(self.law, zeta, prev.x)

    def far(self, zeta: complex) -> _Sol:
        """Solve at a point far from the spectrum (|zeta| >> scale) from the asymptotic start."""
        x0 = _far_start(self.law, zeta)
        sol = _newton(self.law, zeta, x0) or _damped_fixed_point(self.law, zeta, x0)
        if sol is None:
            raise RuntimeError(f"spectrum: no solution of the fixed point at zeta={zeta}")
        return sol

    def rescue(self, zeta: complex, prev: _Sol) -> _Sol | None:
        return _damped_fixed_point(self.law, zeta, prev.x)


# --------------------------------------------------------------------------------------------------
# Products: the subordination equation (S2)
# --------------------------------------------------------------------------------------------------
@dataclass
class _PSol:
    """Converged solution of (S2) at zeta, with the inner one-step solution at zeta_J = 1/v."""

    zeta: complex
    v: complex
    inner: _Sol
    s: complex  # s_W(zeta)


def _wrap(r: complex) -> complex:
    """Residual of exp(r) = 1, reduced modulo 2 pi i to Im in (-pi, pi]."""
    return complex(r.real, (r.imag + np.pi) % (2.0 * np.pi) - np.pi)


class _FreeProduct(_Continuation):
    """Solver of (S2) for T >= 2 with continuation (outer Newton in v, inner (S1) at 1/v)."""

    def __init__(self, law: _Law, T: int):
        self.one = _OneStep(law)
        self.T = T
        self.m1 = law.m1
        self.scale = max(_scale(law) ** T, 1e-300)

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

    def step(self, zeta: complex, prev: _PSol) -> _PSol | None:
        """Damped Newton for v at zeta, warm-started at prev."""
        if not zeta.imag > 0:
            return None
        v, inner = prev.v, prev.inner
        inner = self._inner(1.0 / v, inner)
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
            stalled = rel < 1e-7 and rel > 0.5 * last  # rounding-noise floor (see _newton)
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
            raise RuntimeError(f"spectrum: bad far start at zeta={zeta}")
        start = _PSol(complex(zeta), complex(v0), inner, 0j)
        sol = self.step(complex(zeta), start)
        if sol is None:
            raise RuntimeError(f"spectrum: product solver failed far from the spectrum at zeta={zeta}")
        return sol


# --------------------------------------------------------------------------------------------------
# Products, exact: Hermitian linearization of W = J_T ... J_1 (pencil (S3))
# --------------------------------------------------------------------------------------------------
@dataclass
class _XSol:
    """Converged solution of (S3) at zeta."""

    zeta: complex
    x: np.ndarray  # (3KT,) complex: alpha (T*K), beta (T*K), phi (T*K); index tt*K + k, step t = tt + 1
    s: complex  # s_W(zeta)


def _tridiag_inverse(d: np.ndarray, e: np.ndarray, lo: int, hi: int):
    """Diagonal (N, P) and the block [lo:hi, lo:hi] (hi-lo, hi-lo, P) of the inverse of the symmetric
    tridiagonal matrices with diagonal d (N, P) and off-diagonal e (N-1, P) (one matrix per column p).

    Ratio (continued-fraction) form of the usual recursions, stable for moderate N: left pivots
    l_k = d_k - e_{k-1}^2 / l_{k-1}, right pivots r_k = d_k - e_k^2 / r_{k+1}, then
    M_kk = 1/(l_k + r_k - d_k) and M_ij = M_{i,j-1} (-e_{j-1} / r_j) for i < j. Units where a pivot vanishes
    (exact zeros in the population, e.g. a_p = b_p = 0) are redone with a dense inverse (no pivoting issue).
    """
    N = d.shape[0]
    e2 = e * e
    left = np.empty_like(d)
    right = np.empty_like(d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        left[0] = d[0]
        for k in range(1, N):
            left[k] = d[k] - e2[k - 1] / left[k - 1]
        right[N - 1] = d[N - 1]
        for k in range(N - 2, -1, -1):
            right[k] = d[k] - e2[k] / right[k + 1]
        diag = 1.0 / (left + right - d)
        m = hi - lo
        ratio = -e[lo:hi - 1] / right[lo + 1:hi]  # ratio[j - lo - 1] = -e_{j-1}/r_j for j in lo+1..hi-1
        # With C_j = prod_{k<=j} ratio_k, M_ij = (M_ii / C_i) C_j for i <= j (one product per row instead of
        # a cumulative product per row); the row recursion is the fallback if C leaves the safe range.
        one = np.ones((1,) + d.shape[1:], dtype=d.dtype)
        cum = np.concatenate([one, np.cumprod(ratio, axis=0)])  # (m, P)
        block = np.empty((m, m) + d.shape[1:], dtype=d.dtype)
        absc = np.abs(cum)
        if np.all(np.isfinite(cum)) and absc.min() > 1e-150 and absc.max() < 1e150:
            u = diag[lo:hi] / cum
            for i in range(m):
                row = u[i] * cum[i:]
                block[i, i:] = row
                block[i:, i] = row
        else:
            for i in range(m):
                block[i, i] = diag[lo + i]
                if i + 1 < m:
                    row = diag[lo + i] * np.cumprod(ratio[i:], axis=0)
                    block[i, i + 1:] = row
                    block[i + 1:, i] = row
    pivots = np.concatenate([left, right])
    bad = ~(np.all(np.isfinite(block), axis=(0, 1)) & np.all(np.isfinite(diag), axis=0)
            & np.all(np.abs(pivots) > 1e-200, axis=0))
    if np.any(bad):  # dense fallback for the few degenerate units
        cols = np.nonzero(bad)[0]
        dense = np.zeros((cols.size, N, N), dtype=d.dtype)
        ar = np.arange(N)
        dense[:, ar, ar] = d[:, cols].T
        dense[:, ar[:-1], ar[1:]] = e[:, cols].T
        dense[:, ar[1:], ar[:-1]] = e[:, cols].T
        inv = np.linalg.inv(dense)  # (nb, N, N); raises LinAlgError only for a truly singular pencil
        diag[:, cols] = np.diagonal(inv, axis1=1, axis2=2).T
        block[:, :, cols] = np.transpose(inv[:, lo:hi, lo:hi], (1, 2, 0))
    return diag, block


class _ExactProduct(_Continuation):
    """Exact large-n solver for W = J_T ... J_1 with independent steps (untied weights), pencil (S3).

    Per unit the pencil is a symmetric tridiagonal (2T+4) x (2T+4) matrix, indices
    x, s_0, f_0, s_1, f_1, ..., s_T, f_T, y (0 .. 2T+3): diagonal -w at x and y, 0 at s_0 and f_T, minus the
    self-energies at the f_i, s_{i+1} (i < T); off-diagonal 1 on (x,s_0), (s_i,f_i), (f_T,y) and a_t on
    (f_i, s_{i+1}) with t = T - i (the position of J_t). Step t's units are a random permutation of the
    population (independent steps: the per-unit tuples follow the product law, sampled once, seed 0)."""

    def __init__(self, law: _Law, T: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        P, K = law.P, law.K
        idx = np.stack([rng.permutation(P) for _ in range(T)])  # (T, P): units of step tt + 1
        self.law, self.T, self.K, self.P = law, T, K, P
        self.N = 2 * T + 4
        self.Bq = np.transpose(law.Bq[:, idx], (1, 0, 2))  # (T, K, P)
        self.Cq = np.transpose(law.Cq[:, idx], (1, 0, 2))  # (T, K, P)
        tt = np.arange(T)
        self.r = 2 * (T - 1 - tt) + 2  # global index of f_i (row side of J_{tt+1}), i = T-1-tt   (T,)
        self.q = self.r + 1  # global index of s_{i+1} (column side)
        e = np.ones((self.N - 1, P))
        e[self.r] = law.a[idx]  # a_t between f_i and s_{i+1}
        self.e = e.astype(complex)
        # Unknown "slots": alpha_(tt,k) averages M at r with weight b^2 and feeds Sigma at q with weight c^2;
        # beta_(tt,k) averages at q with c^2 and feeds Sigma at r with b^2.  (2KT,) and (2KT, P)
        rr, qq = np.repeat(self.r, K), np.repeat(self.q, K)
        self.pa = np.concatenate([rr, qq]) - 2  # local index (block starts at global 2)
        self.pi = np.concatenate([qq, rr]) - 2
        Bf, Cf = self.Bq.reshape(T * K, P), self.Cq.reshape(T * K, P)
        self.Lw = np.concatenate([Bf, Cf])
        self.Win = np.concatenate([Cf, Bf])
        self.s2 = np.tile(law.s2, T)  # (KT,)
        self._slots_at = [np.nonzero(self.pa == u)[0] for u in range(2 * T)]
        self.scale = max(_scale(law) ** T, 1e-300)

    def _inverse(self, w: complex, x: np.ndarray):
        T, K, P, N = self.T, self.K, self.P, self.N
        KT = K * T
        al, be, ph = x[:KT].reshape(T, K), x[KT:2 * KT].reshape(T, K), x[2 * KT:].reshape(T, K)
        s2 = self.s2.reshape(T, K)
        sig_r = np.einsum("tk,tkp->tp", s2 * ph * be, self.Bq)  # (T, P)
        sig_q = np.einsum("tk,tkp->tp", s2 * ph * al, self.Cq)
        d = np.zeros((N, P), dtype=complex)
        d[0] = d[N - 1] = -w
        d[self.r] = -sig_r
        d[self.q] = -sig_q
        return _tridiag_inverse(d, self.e, 2, 2 * T + 2)

    def _residual_jacobian(self, w: complex, x: np.ndarray):
        KT, P = self.K * self.T, self.P
        diag, block = self._inverse(w, x)
        al, be, ph = x[:KT], x[KT:2 * KT], x[2 * KT:]
        X2 = x[:2 * KT]
        Mloc = diag[2:2 * self.T + 2]  # (2T, P)
        Phi = np.mean(self.Lw * Mloc[self.pa], axis=1)  # (2KT,)
        kap, s2 = self.law.kappa, self.s2
        F = np.concatenate([X2 - Phi, kap * s2 * al * be * ph * ph + ph - 1.0])
        # dM_uu/dSigma_v = M_uv^2 (dM = M dSigma M):  Q[j, j'] = < Lw_j M[pa_j, pi_j']^2 Win_j' >
        Msq = block * block  # (2T, 2T, P)
        Q = np.empty((2 * KT, 2 * KT), dtype=complex)
        for u in range(2 * self.T):  # each local position is averaged by K slots
            js = self._slots_at[u]
            G = Msq[u][self.pi] * self.Win  # (2KT, P)
            # einsum, not @: numpy's matmul of real by complex arrays takes a slow non-BLAS path here
            Q[js] = np.einsum("jp,qp->jq", self.Lw[js], G) / P
        s2x2 = np.concatenate([s2, s2])
        ph2 = np.concatenate([ph, ph])
        Jm = np.zeros((3 * KT, 3 * KT), dtype=complex)
        Jm[:2 * KT, :2 * KT] = np.eye(2 * KT) - Q * (s2x2 * ph2)
        Jm[:2 * KT, 2 * KT:] = -(Q[:, :KT] * (s2 * al) + Q[:, KT:] * (s2 * be))
        Jm[2 * KT:, :KT] = np.diag(kap * s2 * be * ph * ph)
        Jm[2 * KT:, KT:2 * KT] = np.diag(kap * s2 * al * ph * ph)
        Jm[2 * KT:, 2 * KT:] = np.diag(2.0 * kap * s2 * al * be * ph + 1.0)
        return F, Jm, diag

    def _finish(self, zeta: complex, w: complex, x: np.ndarray) -> _XSol | None:
        KT = self.K * self.T
        try:
            diag, _ = self._inverse(w, x)
        except np.linalg.LinAlgError:
            return None
        Mloc = diag[:2 * self.T + 3]  # x and the f/s positions
        if not (np.all(np.isfinite(Mloc)) and np.all(np.isfinite(x))):
            return None
        # relative test with an absolute floor per position: exact zeros (decoupled degenerate units) come
        # out as rounding noise of either sign
        floor = 1e-13 * np.max(np.abs(Mloc), axis=1, keepdims=True)
        if np.any(Mloc.imag < -_BRANCH_TOL * np.abs(Mloc) - floor):
            return None
        ph = x[2 * KT:]
        for y in (ph * x[:KT], ph * x[KT:2 * KT]):
            if np.any(y.imag < -_BRANCH_TOL * np.abs(y)):
                return None
        s = np.mean(diag[0]) / w  # M_xx = w (W W^T - w^2)^{-1} per unit
        if not np.isfinite(s):
            return None
        return _XSol(complex(zeta), x, complex(s))

    def _newton(self, zeta: complex, x0: np.ndarray) -> _XSol | None:
        w = np.sqrt(complex(zeta))
        found = _newton_solve(lambda x: self._residual_jacobian(w, x), x0)
        return None if found is None else self._finish(zeta, w, found[0])

    def step(self, zeta: complex, prev: _XSol) -> _XSol | None:
        if not zeta.imag > 0:
            return None
        return self._newton(zeta, prev.x)

    def far(self, zeta: complex) -> _XSol:
        KT = self.K * self.T
        x0 = np.concatenate([np.zeros(2 * KT), np.ones(KT)]).astype(complex)  # no self-energy far away
        sol = self._newton(complex(zeta), x0)
        if sol is None:
            raise RuntimeError(f"spectrum: exact product solver failed far from the spectrum at zeta={zeta}")
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
    when a, b, c depend on each other within a unit.
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


def stieltjes(a, b, c, sigma, orthogonal: bool, zeta, steps: int = 1, method: str = "free") -> np.ndarray:
    """Stieltjes transform s(zeta) = lim (1/n) E tr (W W^T - zeta)^{-1} at points zeta with Im zeta > 0.

    W = J (steps = 1): from the Hermitized fixed point (S1) of the module docstring, s = <g1>/sqrt(zeta).
    W = J_T ... J_1 (steps = T): method "free" uses the S-transform subordination (S2) (theory.md eq. (13));
    method "exact" uses the linearization (S3) (see ``density``). Points are solved in the order given,
    each continued from the previous one (order them along a path for speed). zeta: array-like; returns a
    complex array of the same shape.
    """
    law = _Law(a, b, c, sigma, orthogonal)
    z = np.asarray(zeta, dtype=complex)
    if np.any(z.imag <= 0):
        raise ValueError("stieltjes: need Im zeta > 0")
    solver = _solver(law, int(steps), method)
    sols = solver.solve_along(z.ravel())
    return np.array([sol.s for sol in sols], dtype=complex).reshape(z.shape)


def density(a, b, c, sigma, orthogonal: bool, lam: np.ndarray, steps: int = 1, eps: float = 1e-6,
            method: str = "free") -> np.ndarray:
    """Density rho(lambda) of the squared singular values of J (steps = 1) or W_T = J_T...J_1 (steps = T).

    rho(lambda) = Im s(zeta) / pi at zeta = lambda (1 + i eps); eps is a relative smoothing (the Poisson
    kernel width at lambda is eps * lambda), so the error is O(eps) relative where rho is smooth.

    steps = 1 (exact): s_J = <g1>/w, w^2 = zeta, from (S1): per unit
        [[g1, g12], [g12, g2]] = [[-w - Sigma1_p, a_p], [a_p, -w - Sigma2_p]]^{-1},
        Sigma1_p = sum_k sigma_k^2 phi_k b_kp^2 beta_k, Sigma2_p = sum_k sigma_k^2 phi_k c_kp^2 alpha_k,
        alpha_k = <b_k^2 g1>, beta_k = <c_k^2 g2>, kappa sigma_k^2 alpha_k beta_k phi_k^2 + phi_k - 1 = 0
        (kappa = 0 Gaussian: phi = 1, the matrix Dyson equation; kappa = 1 orthogonal).
    steps = T, method "free": S_W = S_J^T (theory.md eq. (13)) through (S2):
        v^T ((1 + psi_J(v))/psi_J(v))^(T-1) = 1/zeta,  s_W = -(1 + psi_J(v))/zeta,
        psi_J(v) = -1 - s_J(1/v)/v.
        Exact only if the J_t are asymptotically free, which for fresh diagonals needs a^2 and all c_k^2
        constant across units (e.g. deterministic forget gate f and reset gate r'); otherwise an
        approximation (see ``product_moments_exact`` and the measurements in the module docstring).
    steps = T, method "exact": Hermitian linearization (S3) of the product (per unit a (2T+4)-dimensional
        tridiagonal pencil, 3KT unknowns), exact for independent steps; cost grows like T^2 per point and
        the per-unit tuples across steps are one random sample (seed 0) of the product law (Monte Carlo
        error O(P^-1/2), like the population itself). Measured ~0.06 s per grid point at T = 10,
        P = 2000, K = 1, growing like T^2: practical up to T ~ 20-30; use "free" beyond.

    lam: grid of lambda > 0 (any order and shape); returns rho with the same shape. Normalization: rho is
    the absolutely continuous part of the spectral law, int_0^inf rho = 1 - zero_atom(...) (= 1 without an
    atom at 0). The grid is swept from its largest value down, each point continued from the previous one.
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
    # eta proportional to lambda: products pile up mass near 0 (rho ~ lambda^(-T/(T+1))), and an absolute
    # eta would smear a finite fraction of it away; relative smoothing keeps rho accurate at every scale.
    sols = solver.solve_along(flat[order] * (1.0 + 1j * eps))
    rho = np.empty(flat.size)
    rho[order] = [max(sol.s.imag, 0.0) / np.pi for sol in sols]
    return rho.reshape(lam.shape)


def zero_atom(a, b, c, sigma, orthogonal: bool, steps: int = 1, method: str = "free",
              r_min: float = 1e-14) -> float:
    """Mass of the atom at lambda = 0 of the squared singular values of J (steps = 1) or W_T (steps = T).

    atom = lim_{zeta -> 0} (-zeta s(zeta)), evaluated along the ray zeta = r e^{0.6 i pi} (r geometric, 8
    points per decade, down to r_min * scale with scale = max(m1, sqrt(m2))^T) with s from (S1), or for
    steps = T with method "exact" from (S3). The continuous part adds C r^q (q = 1 - p for a density
    ~ lambda^(-p) at 0); this power-law correction is removed by Aitken's delta^2 extrapolation over the last
    three decades, leaving errors ~1e-6 or below in the cases tested. With method "free" and steps > 1 the
    atom of J is returned: the atom at 0 of a free product is the largest atom of its factors (Belinschi
    2003). For the actual untied product (method "exact") the atom grows with T, because the factors'
    kernels are aligned with the unit axes rather than in general position: e.g. 20 % zero rows and 10 %
    zero columns per step give 0.200 for J and 0.278 for J_2 J_1 (finite n = 1000: 0.272).
    An atom needs a degenerate population, e.g. a positive fraction of units with a_p = 0 and all b_kp = 0.
    """
    law = _Law(a, b, c, sigma, orthogonal)
    T = int(steps)
    solver = _solver(law, T, method)
    if T > 1 and method == "free":
        solver = _OneStep(law)
    n_pts = int(8 * np.log10(100.0 / r_min)) + 1
    radii = np.geomspace(100.0 * solver.scale, r_min * solver.scale, n_pts)
    sols = solver.solve_along(radii * np.exp(0.6j * np.pi))
    f = np.array([(-sol.zeta * sol.s).real for sol in sols[-17::8]])  # last three decades
    d1, d2 = f[1] - f[0], f[2] - f[1]
    atom = f[2]
    if d1 != 0 and 0 < d2 / d1 < 1:  # geometric (power-law in r) convergence: extrapolate
        atom = f[2] - d2 * d2 / (d2 - d1)
    return float(np.clip(atom, 0.0, 1.0))
