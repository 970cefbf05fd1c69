"""Large-n spectral theory of J = A + sum_k B_k U_k C_k (mftrnn.theory.spectrum) against finite matrices.

Finite-size tolerances. Moments: the finite matrices reuse the population itself as their diagonals
(n = P), so only the randomness of U remains; (1/n) tr(J J^T) and (1/n) tr((J J^T)^2) then have O(1/n)
bias and O(1/n) fluctuations, ~0.1-0.5 % at n = 1000, and the tolerances (1 %, 2.5 %) are several times that
while still far below the effects tested (kappa term, within-unit dependence: 5-25 %). Densities: the
Kolmogorov distance between the empirical spectral CDF of one n x n matrix and its limit is O(1/n) in the
bulk (eigenvalue rigidity) plus O(P^-1/2) from resampling the diagonals; measured 0.002-0.011 at
n = 1000, asserted < 0.02, while the alternatives that must be told apart differ by > 0.05.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from mftrnn.theory import spectrum as sp


# ------------------------------------------------------------------------------------------------------
# Population laws and finite matrices
# ------------------------------------------------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru_law(P: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GRU-like unit law with dependence inside a unit: a = f, b = (1-f) tanh'(u), c = r (K = 1), where the
    forget gate f, reset gate r and candidate pre-activation u share a Gaussian z1."""
    z1, z2, z3 = rng.standard_normal((3, P))
    f = sigmoid(1.0 + 1.5 * z1)
    r = sigmoid(0.5 + 1.5 * (0.7 * z1 + 0.71 * z2))
    u = 0.6 * z1 + 0.8 * z3
    return f, ((1 - f) * (1 - np.tanh(u) ** 2))[None], r[None]


def k2_law(P: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K = 2 dependent law (update-gate and candidate paths of eq. (9)-like Jacobians)."""
    z = rng.standard_normal((4, P))
    f = sigmoid(0.5 * z[0])
    r = sigmoid(1 + 1.5 * (0.7 * z[0] + 0.71 * z[1]))
    u = 0.6 * z[0] + 0.8 * z[2]
    b = np.stack([(1 - f) * (1 - np.tanh(u) ** 2), f * (1 - f) * (1 + np.abs(z[3]))])
    c = np.stack([r, 0.5 + 0.5 * np.abs(z[0])])
    return f, b, c


def critical_sigma(a, b, c) -> float:
    """sigma making m1 = 1 for K = 1 (theory.md: criticality)."""
    return float(np.sqrt((1 - np.mean(a**2)) / (np.mean(b**2) * np.mean(c**2))))


def haar(n: int, rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def jacobian(a, b, c, sigma, orthogonal: bool, rng) -> np.ndarray:
    """One finite J (n = len(a)) with the given diagonals; b, c are (K, n)."""
    n = a.size
    J = np.diag(a).astype(float)
    for k in range(b.shape[0]):
        U = haar(n, rng) if orthogonal else rng.standard_normal((n, n)) / np.sqrt(n)
        J += b[k][:, None] * (sigma[k] * U) * c[k][None, :]
    return J


def product_sv2(a, b, c, sigma, orthogonal: bool, T: int, rng, reps: int = 1) -> np.ndarray:
    """Sorted squared singular values of W = J_T ... J_1, fresh U's and fresh diagonals per step (a random
    permutation of the population per step: independent steps with exactly the population law)."""
    out = []
    for _ in range(reps):
        W = np.eye(a.size)
        for _ in range(T):
            p = rng.permutation(a.size)
            W = jacobian(a[p], b[:, p], c[:, p], sigma, orthogonal, rng) @ W
        out.append(np.linalg.svd(W, compute_uv=False) ** 2)
    return np.sort(np.concatenate(out))


def theory_cdf(a, b, c, sigma, orthogonal, L, T=1, method="free", n=300):
    """CDF of the theory on lam = L u^(T+1), u in [1e-6, 1] (dense near 0 where products pile up mass),
    integrated by the trapezoid rule in u (d lam = L q u^(q-1) du keeps the integrand bounded)."""
    q = T + 1
    u = np.linspace(1e-6, 1.0, n)
    lam = L * u**q
    rho = sp.density(a, b, c, sigma, orthogonal, lam, steps=T, method=method)
    f = rho * L * q * u ** (q - 1)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(u))])
    return lam, cdf


def ks(ev_sorted, lam, cdf) -> float:
    return float(np.max(np.abs(np.searchsorted(ev_sorted, lam) / ev_sorted.size - cdf)))


LAWS = {"gru": gru_law, "k2": k2_law}


def law_and_sigma(name: str, P: int, seed: int):
    a, b, c = LAWS[name](P, np.random.default_rng(seed))
    sigma = [critical_sigma(a, b, c)] if name == "gru" else [3.0, 2.0]
    return a, b, c, sigma


# ------------------------------------------------------------------------------------------------------
# Moments
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gru", "k2"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_moments_vs_finite(name, orthogonal):
    n = 1000
    a, b, c, sigma = law_and_sigma(name, n, seed=1)
    rng = np.random.default_rng(2)
    m1, m2 = sp.moments(a, b, c, sigma, orthogonal)
    fin = []
    for _ in range(2):
        J = jacobian(a, b, c, sigma, orthogonal, rng)
        X = J @ J.T
        fin.append((np.trace(X) / n, np.sum(X * X) / n))  # (1/n) tr X, (1/n) tr X^2
    f1, f2 = np.mean(fin, axis=0)
    assert abs(m1 / f1 - 1) < 0.005  # measured <= 0.17 %
    assert abs(m2 / f2 - 1) < 0.015  # measured <= 0.36 %
    # The test is sensitive to what it checks: the other kind of U (the kappa term) is 10-17 % off ...
    assert abs(sp.moments(a, b, c, sigma, not orthogonal)[1] / f2 - 1) > 0.08
    if name == "gru":  # ... and so (6 %) is decoupling a unit's entries (independent permutations of a, b,
        # c: same marginals), i.e. theory.md eq. (11) with its factorized averages
        perm = np.random.default_rng(3)
        _, m2i = sp.moments(a[perm.permutation(n)], b[:, perm.permutation(n)], c[:, perm.permutation(n)],
                            sigma, orthogonal)
        assert abs(m2i / f2 - 1) > 0.04


def test_moments_kappa_and_closed_forms():
    P = 500
    a, b, c = np.zeros(P), np.ones((1, P)), np.ones((1, P))
    assert sp.moments(a, b, c, [1.0], False) == pytest.approx((1.0, 2.0))  # Marchenko-Pastur
    assert sp.moments(a, b, c, [1.0], True) == pytest.approx((1.0, 1.0))  # J = O
    # theory.md eq. (19): J = f I + B U, m2 = f^4 + 4 s f^2 <B^2> + s^2 (<B^4> + (1 - kappa) <B^2>^2)
    rng = np.random.default_rng(0)
    B = rng.random(P)
    f, s = 0.7, 1.3**2
    for kappa, orth in ((0, False), (1, True)):
        m1, m2 = sp.moments(np.full(P, f), B[None], np.ones((1, P)), [1.3], orth)
        assert m1 == pytest.approx(f**2 + s * np.mean(B**2))
        assert m2 == pytest.approx(f**4 + 4 * s * f**2 * np.mean(B**2)
                                   + s**2 * (np.mean(B**4) + (1 - kappa) * np.mean(B**2) ** 2))


# ------------------------------------------------------------------------------------------------------
# Closed forms: Marchenko-Pastur and Fuss-Catalan
# ------------------------------------------------------------------------------------------------------
def test_marchenko_pastur():
    P = 200
    a, b, c = np.zeros(P), np.ones((1, P)), np.ones((1, P))
    lam = np.linspace(0.01, 4.5, 300)
    rho = sp.density(a, b, c, [1.0], False, lam)
    inside = lam < 3.9
    exact = np.sqrt(4 / lam[inside] - 1) / (2 * np.pi)
    assert np.max(np.abs(rho[inside] - exact)) < 1e-4
    assert np.max(rho[lam > 4.1]) < 1e-5
    assert sp.zero_atom(a, b, c, [1.0], False) < 1e-6


def fuss_catalan(T: int, n: int = 4000):
    """Parametric Fuss-Catalan density (product of T square Ginibre matrices), phi in (0, pi/(T+1))."""
    ph = np.linspace(1e-6, np.pi / (T + 1) - 1e-6, n)
    x = np.sin((T + 1) * ph) ** (T + 1) / (np.sin(ph) * np.sin(T * ph) ** T)
    r = np.sin(ph) ** 2 * np.sin(T * ph) ** (T - 1) / (np.pi * np.sin((T + 1) * ph) ** T)
    return x, r


@pytest.mark.parametrize("T", [2, 3, 5])
def test_fuss_catalan(T):
    P = 200
    a, b, c = np.zeros(P), np.ones((1, P)), np.ones((1, P))
    x, r = fuss_catalan(T)
    sel = (x > 1e-3) & (x < 0.98 * x.max())
    xs, rs = x[sel][::50], r[sel][::50]
    rho = sp.density(a, b, c, [1.0], False, xs, steps=T)
    assert np.max(np.abs(rho / rs - 1)) < 1e-3
    assert sp.product_moments(1.0, 2.0, T) == pytest.approx((1.0, T + 1.0))
    assert sp.product_moments_exact(a, b, c, [1.0], False, T) == pytest.approx((1.0, T + 1.0))
    # moments of the computed density itself (m1 = 1, m2 = T + 1), on a grid dense near 0
    q = T + 1
    u = np.linspace(1e-4, 1.0, 600)
    L = 1.001 * (T + 1) ** (T + 1) / T**T  # right edge of the support
    dens = sp.density(a, b, c, [1.0], False, L * u**q, steps=T)
    w = dens * L * q * u ** (q - 1)  # d lam = L q u^(q-1) du
    for k, expected in ((0, 1.0), (1, 1.0), (2, T + 1.0)):
        assert np.trapezoid(w * (L * u**q) ** k, u) == pytest.approx(expected, rel=2e-3)
    if T == 2:  # the exact product method agrees here (A = 0, B = I: the factors are free)
        rho_x = sp.density(a, b, c, [1.0], False, xs, steps=T, method="exact")
        assert np.max(np.abs(rho_x / rs - 1)) < 1e-3


# ------------------------------------------------------------------------------------------------------
# One-step densities against finite matrices
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gru", "k2"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_density_vs_finite(name, orthogonal):
    n = 1000
    a, b, c, sigma = law_and_sigma(name, 3000, seed=4)
    rng = np.random.default_rng(5)
    af, bf, cf = LAWS[name](n, rng)  # the finite matrix draws its own diagonals from the same law
    ev = np.sort(np.linalg.eigvalsh((lambda J: J @ J.T)(jacobian(af, bf, cf, sigma, orthogonal, rng))))
    lam, cdf = theory_cdf(a, b, c, sigma, orthogonal, 1.3 * ev[-1])
    assert abs(cdf[-1] - 1) < 3e-3
    assert ks(ev, lam, cdf) < 0.02
    if name == "k2":  # sensitivity: the other kind of U gives a clearly different spectrum here
        _, cdf_other = theory_cdf(a, b, c, sigma, not orthogonal, 1.3 * ev[-1])
        assert ks(ev, lam, cdf_other) > 0.035


def test_density_moments_consistency():
    """int rho = 1, int lam rho = m1, int lam^2 rho = m2 (orthogonal, K = 2, A != 0)."""
    a, b, c, sigma = law_and_sigma("k2", 2000, seed=6)
    m1, m2 = sp.moments(a, b, c, sigma, True)
    u = np.linspace(1e-6, 1.0, 500)  # lam = L u^2: rho ~ lam^(-1/2) at 0 here, ~0.3 % of the mass below 3e-5
    L = 20.0 * m1
    rho = sp.density(a, b, c, sigma, True, L * u**2)
    w = rho * 2 * L * u
    assert np.trapezoid(w, u) == pytest.approx(1.0, abs=2e-3)
    assert np.trapezoid(w * L * u**2, u) == pytest.approx(m1, rel=3e-3)
    assert np.trapezoid(w * (L * u**2) ** 2, u) == pytest.approx(m2, rel=5e-3)
    assert rho[-1] < 1e-7  # L lies beyond the support (what remains is the O(eps) Lorentzian tail)


def test_pencil_T1_equals_one_step():
    """The product linearization (S3) with T = 1 reproduces the one-step fixed point (S1)."""
    a, b, c, sigma = law_and_sigma("k2", 500, seed=7)
    for orthogonal in (False, True):
        law = sp._Law(a, b, c, sigma, orthogonal)
        for z in (2.0 + 1.0j, 0.3 + 1e-4j):
            s1 = sp._OneStep(law).descend(z).s
            s3 = sp._ExactProduct(law, 1).descend(z).s
            assert abs(s3 - s1) < 1e-10 * abs(s1)


def test_damped_fixed_point_agrees_with_newton():
    """The plain damped fixed-point iteration of (S1) (slow but globally convergent for Im w > 0) lands on
    the same solution as Newton's method with continuation."""
    a, b, c, sigma = law_and_sigma("k2", 1000, seed=17)
    for orthogonal in (False, True):
        law = sp._Law(a, b, c, sigma, orthogonal)
        z = 1.0 + 0.05j
        s_newton = sp._OneStep(law).descend(z).s
        s_fp = sp._damped_fixed_point(law, z, sp._far_start(law, z)).s
        assert abs(s_fp - s_newton) < 1e-9 * abs(s_newton)


# ------------------------------------------------------------------------------------------------------
# Products
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orthogonal", [False, True])
def test_products_free_case_vs_finite(orthogonal):
    """A = f I and C = I: the steps are asymptotically free and S-multiplication (eq. (13)) is exact."""
    P, n = 2000, 800
    rng = np.random.default_rng(8)
    B = 0.5 * (1 - np.tanh(rng.standard_normal(P)) ** 2)
    a, b, c, sigma = np.full(P, 0.8), B[None], np.ones((1, P)), [1.2]
    for T in (2, 5, 10):
        ev = product_sv2(a[:n], b[:, :n], c[:, :n], sigma, orthogonal, T, rng)
        lam, cdf = theory_cdf(a, b, c, sigma, orthogonal, 1.3 * ev[-1], T=T)
        assert abs(cdf[-1] - 1) < 3e-3
        assert ks(ev, lam, cdf) < 0.02, T
    _, cdf_x = theory_cdf(a, b, c, sigma, orthogonal, 1.3 * ev[-1], T=3, method="exact", n=120)
    _, cdf_f = theory_cdf(a, b, c, sigma, orthogonal, 1.3 * ev[-1], T=3, method="free", n=120)
    assert np.max(np.abs(cdf_x - cdf_f)) < 0.005  # the two methods agree when (13) holds


def test_products_general_vs_finite():
    """Fluctuating forget gate: the exact product method matches finite products, eq. (13) does not."""
    P = 1000
    rng = np.random.default_rng(9)
    a = np.where(rng.random(P) < 0.5, 0.3, 1.5) + 0.02 * rng.standard_normal(P)  # bimodal gate
    b, c, sigma = np.ones((1, P)), (0.8 + 0.4 * rng.random(P))[None], [0.25]
    for orthogonal, T in ((False, 3), (True, 2)):
        ev = product_sv2(a, b, c, sigma, orthogonal, T, rng)
        lam, cdf_x = theory_cdf(a, b, c, sigma, orthogonal, 1.2 * ev[-1], T=T, method="exact", n=200)
        _, cdf_f = theory_cdf(a, b, c, sigma, orthogonal, 1.2 * ev[-1], T=T, method="free", n=200)
        assert ks(ev, lam, cdf_x) < 0.02
        assert ks(ev, lam, cdf_f) > 0.05
    # GRU-like dependent law at criticality (a small but resolvable effect): exact within finite-size noise
    a, b, c, sigma = law_and_sigma("gru", 1000, seed=10)
    ev = product_sv2(a, b, c, sigma, False, 3, rng)
    lam, cdf_x = theory_cdf(a, b, c, sigma, False, 1.2 * ev[-1], T=3, method="exact", n=200)
    assert ks(ev, lam, cdf_x) < 0.015


def test_product_moments():
    P = 800
    rng = np.random.default_rng(11)
    # cases where eq. (13) is exact: the exact recursion must reproduce it
    B = rng.random(P) + 0.3
    for a, b, c in ((np.zeros(P), np.ones((1, P)), (0.5 + rng.random(P))[None]),
                    (np.full(P, 0.8), B[None], np.ones((1, P)))):
        for orth in (False, True):
            m1, m2 = sp.moments(a, b, c, [0.9], orth)
            for T in (1, 2, 7):
                assert sp.product_moments_exact(a, b, c, [0.9], orth, T) == pytest.approx(
                    sp.product_moments(m1, m2, T), rel=1e-12)
    assert sp.product_moments_exact(*law_and_sigma("k2", P, 12), True, 1) == pytest.approx(
        sp.moments(*law_and_sigma("k2", P, 12), True), rel=1e-12)
    # a fluctuating forget gate: finite products follow the exact recursion, not eq. (13)
    a = np.where(rng.random(P) < 0.5, 0.3, 1.5)
    b, c, sigma = np.ones((1, P)), (0.8 + 0.4 * rng.random(P))[None], [0.25]
    T = 3
    fin = []
    for _ in range(4):
        W = np.eye(P)
        for _ in range(T):
            p = rng.permutation(P)
            W = jacobian(a[p], b[:, p], c[:, p], sigma, False, rng) @ W
        X = W @ W.T
        fin.append((np.trace(X) / P, np.sum(X * X) / P))
    f1, f2 = np.mean(fin, axis=0)
    M1, M2 = sp.product_moments_exact(a, b, c, sigma, False, T)
    M1f, M2f = sp.product_moments(*sp.moments(a, b, c, sigma, False), T)
    assert M1 == pytest.approx(M1f)  # M1 = m1^T always
    # per-unit products of independent bimodal gates fluctuate: ~3 % at n = 800 over 4 draws
    assert abs(M1 / f1 - 1) < 0.06 and abs(M2 / f2 - 1) < 0.12
    assert abs(M2f / f2 - 1) > 0.3


# ------------------------------------------------------------------------------------------------------
# Atom at zero
# ------------------------------------------------------------------------------------------------------
def test_zero_atom():
    P = 1000
    rng = np.random.default_rng(13)
    a, b, c = 0.5 + 0.3 * rng.random(P), 1 + rng.random(P), 0.5 + rng.random(P)
    idx = rng.permutation(P)
    a[idx[:200]] = b[idx[:200]] = 0.0  # 20 % zero rows
    a[idx[200:300]] = c[idx[200:300]] = 0.0  # 10 % zero columns
    b, c, sigma = b[None], c[None], [1.5]
    for orth in (False, True):
        assert sp.zero_atom(a, b, c, sigma, orth) == pytest.approx(0.2, abs=1e-6)
        assert sp.zero_atom(a, b, c, sigma, orth, steps=3) == pytest.approx(0.2, abs=1e-6)  # free product
    u = np.linspace(1e-6, 1, 400)
    L = 80.0  # beyond the right edge
    rho = sp.density(a, b, c, sigma, False, L * u**2)
    assert np.trapezoid(rho * 2 * L * u, u) == pytest.approx(0.8, abs=3e-3)  # continuous part only
    # untied products: kernels aligned with the unit axes make the atom grow (0.2 -> 0.278 at T = 2)
    atom2 = sp.zero_atom(a, b, c, sigma, False, steps=2, method="exact")
    sv2 = product_sv2(a, b, c, sigma, False, 2, rng, reps=2)
    assert atom2 == pytest.approx(np.mean(sv2 < 1e-16 * sv2[-1]), abs=0.02)
    assert atom2 > 0.25
    g = np.random.default_rng(14).standard_normal((3, 500))
    assert sp.zero_atom(g[0], g[1], g[2], [1.0], True) < 1e-6


# ------------------------------------------------------------------------------------------------------
# Speed and input checks
# ------------------------------------------------------------------------------------------------------
def test_speed_one_step():
    a, b, c, sigma = law_and_sigma("k2", 4000, seed=15)
    lam = np.linspace(1e-3, 30.0, 400)
    t0 = time.perf_counter()
    sp.density(a, b, c, sigma, True, lam)
    assert time.perf_counter() - t0 < 10.0


def test_input_validation():
    a, b, c, sigma = law_and_sigma("gru", 100, seed=16)
    with pytest.raises(ValueError):
        sp.density(a, b, c, sigma, False, np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        sp.density(a, b[:, :50], c, sigma, False, np.array([1.0]))
    with pytest.raises(ValueError):
        sp.density(a, b, c, sigma, False, np.array([1.0]), steps=2, method="tied")
    with pytest.raises(ValueError):
        sp.stieltjes(a, b, c, sigma, False, [1.0 - 1.0j])
    # 1-D b, c and scalar sigma are accepted for K = 1
    assert sp.moments(a, b[0], c[0], sigma[0], False) == sp.moments(a, b, c, sigma, False)
