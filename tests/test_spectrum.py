"""Large-n spectral theory of J = A + sum_k B_k U_k C_k (mftrnn.theory.spectrum) against finite matrices.

Finite-size tolerances. Moments: the finite matrices reuse the population itself as their diagonals
(n = P), so only the randomness of U remains; (1/n) tr(J J^T) and (1/n) tr((J J^T)^2) then have O(1/n)
bias and O(1/n) fluctuations, ~0.1-0.5 % at n = 1000, and the tolerances (1 %, 2.5 %) are several times that
while still far below the effects tested (kappa term, within-unit dependence: 5-25 %). Densities: the
Kolmogorov distance between the empirical spectral CDF of one n x n matrix and its limit is O(1/n) in the
bulk (eigenvalue rigidity) plus O(P^-1/2) from resampling the diagonals; measured 0.002-0.011 at
n = 1000, asserted < 0.02, while the alternatives that must be told apart differ by > 0.05.
Degenerate laws (identical units, all-zero b_k or c_k rows, sigma_k = 0, hard edges, atoms) are checked
against exact formulas where they exist (arcsine law of |a + s e^{i theta}|^2, the shifted-circular
Dozier-Silverstein cubic, Lorentzian-smoothed atoms) and otherwise against finite matrices.
"""
from __future__ import annotations


import numpy as np
import pytest

from mftrnn.theory import spectrum as sp


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """The finite-matrix references (QR, SVD, products of n x n matrices) run single-threaded in BLAS as
    the solver does: on shared cores OpenBLAS's threads make them many times slower."""
    with sp._one_blas_thread():
        yield


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
    # the exact product method agrees here (A = 0, B = I: the factors are free); with a = 0 every unit's
    # pencil splits into blocks (the explicit-block path of the solver)
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
    """The product linearization eq. (T33) with T = 1 reproduces the one-step fixed point eq. (T24)."""
    a, b, c, sigma = law_and_sigma("k2", 500, seed=7)
    for orthogonal in (False, True):
        law = sp._Law(a, b, c, sigma, orthogonal)
        for z in (2.0 + 1.0j, 0.3 + 1e-4j):
            s1 = sp._OneStep(law).descend(z).s
            s3 = sp._ExactProduct(law, 1).descend(z).s
            assert abs(s3 - s1) < 1e-10 * abs(s1)


def test_damped_fixed_point_agrees_with_newton():
    """The plain damped fixed-point iteration of eq. (T24) (slow, but it needs no good start) lands on the
    same solution as Newton's method with continuation."""
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
# Degenerate laws: identical units, zero rows, sigma_k = 0, hard edges, atoms
# ------------------------------------------------------------------------------------------------------
def identical(P: int, a: float, b, c):
    """Every unit the same: a (P,), b and c (K, P)."""
    ones = np.ones(P)
    return a * ones, np.asarray(b, float)[:, None] * ones, np.asarray(c, float)[:, None] * ones


def arcsine(lam, a: float, s: float):
    """Density of |a + s e^{i theta}|^2, theta uniform: the squared singular values of a I + s O (O Haar
    orthogonal, n -> inf: J is normal with eigenvalues uniform on the circle a + s e^{i theta})."""
    lo, hi = (abs(a) - abs(s)) ** 2, (abs(a) + abs(s)) ** 2
    inside = (lam > lo) & (lam < hi)
    out = np.zeros_like(lam)
    out[inside] = 1.0 / (np.pi * np.sqrt((lam[inside] - lo) * (hi - lam[inside])))
    return out


def shifted_circular(lam, a: float, s: float):
    """Density of the squared singular values of a I + s G (G Ginibre, entries N(0, 1/n)): the Stieltjes
    transform m solves the Dozier-Silverstein equation m = 1/(a^2/(1 + s^2 m) - (1 + s^2 m) z), a cubic."""
    out = np.empty_like(lam)
    for i, z in enumerate(lam + 1e-12j):
        roots = np.roots([-z * s**4, -2 * z * s**2, a * a - z - s * s, -1])
        out[i] = max(roots.imag.max(), 0.0) / np.pi
    return out


# R = 0 populations of the default LSTM / GRU: every unit identical, some b_k rows exactly zero; both are
# J = 0.5 I + 0.25 U in effect (they made the old solver fail: the unknowns of the zero terms vanish
# identically and their rounding noise failed the branch checks)
R0_LAWS = {"lstm": (0.5, [0.0, 0.0, 0.5], [0.5] * 3), "gru": (0.5, [0.0, 0.25, 0.0], [1.0] * 3)}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_identical_units_with_zero_rows(cell, orthogonal):
    a, b, c = identical(4000, *R0_LAWS[cell])
    sigma = [1.0, 1.0, 1.0]
    lam = np.linspace(0.0625 / 4, 0.6, 200)
    rho = sp.density(a, b, c, sigma, orthogonal, lam)
    exact = arcsine(lam, 0.5, 0.25) if orthogonal else shifted_circular(lam, 0.5, 0.25)
    lo, hi = 0.0625, 0.5625  # edges (a -+ s)^2 (orthogonal); the Gaussian support lies inside [0.004, 0.63]
    away = (np.abs(lam - lo) > 0.01) & (np.abs(lam - hi) > 0.01)  # eps-smoothing is O(1e-3) at the edges
    assert np.max(np.abs(rho - exact)[away]) < 3e-3 * np.max(exact)  # measured 4e-4 (orth), 1e-4 (Gauss)
    assert sp.zero_atom(a, b, c, sigma, orthogonal) < 1e-6


def test_zero_terms_are_dropped():
    """sigma_k = 0, an all-zero c_k row and an all-zero b_k row add nothing: the density is that of the law
    without those terms (non-identical units), for one step and for the exact product."""
    rng = np.random.default_rng(20)
    P = 1000
    a, b1, c1 = 0.3 + 0.5 * rng.random(P), 0.5 + rng.random(P), 0.5 + rng.random(P)
    b = np.stack([rng.random(P), rng.random(P), np.zeros(P), b1])
    c = np.stack([rng.random(P), np.zeros(P), rng.random(P), c1])
    sigma = [0.0, 1.0, 1.0, 0.6]
    lam = np.geomspace(1e-3, 5.0, 40)
    for orthogonal in (False, True):
        for steps, method in ((1, "free"), (3, "exact"), (3, "free")):
            full = sp.density(a, b, c, sigma, orthogonal, lam, steps=steps, method=method)
            reduced = sp.density(a, b1[None], c1[None], [0.6], orthogonal, lam, steps=steps, method=method)
            assert np.max(np.abs(full - reduced)) < 1e-9 * np.max(reduced)


def test_hard_edge_at_zero():
    """J = 0.5 (I + O), identical units, plus a term with zero b: arcsine law on [0, 1] with its lambda^(-1/2)
    singularity at 0, no atom."""
    a, b, c = identical(2000, 0.5, [0.5, 0.0], [1.0, 1.0])
    lam = np.geomspace(1e-6, 0.99, 120)
    rho = sp.density(a, b, c, [1.0, 1.0], True, lam)
    assert np.max(np.abs(rho / arcsine(lam, 0.5, 0.5) - 1)) < 1e-3  # measured 2e-6 (eps smoothing)
    assert sp.zero_atom(a, b, c, [1.0, 1.0], True) < 1e-4


def test_scaled_orthogonal_atom():
    """J = sigma O: all mass in an atom at sigma^2. density is the eps-smoothed measure there, i.e. the
    Lorentzian Im 1/(sigma^2 - lambda (1 + i eps)) / pi, also exactly at sigma^2; no atom at 0."""
    a, b, c = identical(500, 0.0, [1.0], [1.0])
    sigma, eps = 0.7, 1e-6
    lam = np.concatenate([np.linspace(0.01, 1.0, 100), [0.49, 0.49 * (1 + 3e-6)]])
    rho = sp.density(a, b, c, [sigma], True, lam, eps=eps)
    exact = (1.0 / (sigma**2 - lam * (1 + 1j * eps))).imag / np.pi
    assert np.max(np.abs(rho / exact - 1)) < 1e-4  # measured 5e-9 (1e-5 at the peak itself)
    assert sp.zero_atom(a, b, c, [sigma], True) < 1e-6
    # the product of T independent copies is sigma^T times an orthogonal matrix: the atom moves to sigma^(2T)
    rho3 = sp.density(a, b, c, [sigma], True, lam**3, steps=3, method="exact", eps=eps)
    exact3 = (1.0 / (sigma**6 - lam**3 * (1 + 1j * eps))).imag / np.pi
    # near zeta = 0 the system for A = 0 is ill-conditioned: 3e-4 relative on a tail value of 2e-11
    assert np.all(np.abs(rho3 - exact3) < 1e-4 * exact3 + 1e-13)


def test_no_random_term():
    """All terms zero: J = A, whose squared singular values are the a_p^2 (exact Stieltjes transform
    <1/(a^2 - zeta)>), with an atom at 0 of the fraction of a_p = 0."""
    rng = np.random.default_rng(21)
    P = 400
    a = 0.2 + rng.random(P)
    a[:40] = 0.0
    b, c = rng.random((2, P)), np.zeros((2, P))
    z = np.array([0.5 + 0.3j, 1.2 + 1e-3j, 1e-4 + 1e-6j])
    s = sp.stieltjes(a, b, c, [1.0, 0.5], False, z)
    assert np.allclose(s, np.mean(1.0 / (a[:, None] ** 2 - z), axis=0), rtol=1e-10)
    assert sp.zero_atom(a, b, c, [1.0, 0.5], True) == pytest.approx(0.1, abs=1e-6)
    ac = np.full(P, 0.9)  # constant a: W = 0.9^T I
    for method in ("exact", "free"):
        s3 = sp.stieltjes(ac, b, c, [0.0, 0.0], True, z, steps=3, method=method)
        assert np.allclose(s3, 1.0 / (0.9**6 - z), rtol=1e-8)


@pytest.mark.parametrize("orthogonal", [False, True])
def test_degenerate_products_vs_finite(orthogonal):
    """Products of the identical-unit GRU law with zero rows (R = 0): here the steps are free (constant a
    and c), so both methods must match finite products."""
    a, b, c = identical(2000, *R0_LAWS["gru"])
    sigma = [1.0, 1.0, 1.0]
    rng = np.random.default_rng(22)
    n, T = 1000, 3
    ev = product_sv2(a[:n], b[:, :n], c[:, :n], sigma, orthogonal, T, rng)
    for method in ("exact", "free"):
        lam, cdf = theory_cdf(a, b, c, sigma, orthogonal, 1.3 * ev[-1], T=T, method=method, n=200)
        assert abs(cdf[-1] - 1) < 3e-3
        assert ks(ev, lam, cdf) < 0.02  # measured 0.002-0.004


def test_unreached_points_are_nan_not_errors(monkeypatch):
    """When the continuation runs out of its work budget the remaining points come back as NaN with a
    RuntimeWarning, quickly, instead of raising or bisecting without end."""
    monkeypatch.setattr(sp, "_BUDGET_BASE", 0)
    monkeypatch.setattr(sp, "_BUDGET_PER_POINT", 1)
    a, b, c, sigma = law_and_sigma("k2", 300, seed=23)
    lam = np.linspace(0.01, 30.0, 20)
    with pytest.warns(RuntimeWarning, match="could not reach"):
        rho = sp.density(a, b, c, sigma, True, lam)
    assert np.isnan(rho).any() and rho.shape == lam.shape
    with pytest.warns(RuntimeWarning, match="could not reach"):
        s = sp.stieltjes(a, b, c, sigma, True, lam + 1j, steps=3, method="exact")
    assert np.isnan(s).any()


def test_exact_product_jacobian():
    """Newton's matrix of the exact product (semiseparable inverse, explicit blocks for units with a_t = 0,
    chord reuse) against central finite differences of the residual."""
    rng = np.random.default_rng(24)
    P = 60
    a = np.where(rng.random(P) < 0.3, 0.0, 0.3 + 0.6 * rng.random(P))  # some exact zeros: cut chains
    b, c = rng.random((2, P)) + 0.2, rng.random((2, P)) + 0.3
    w = np.sqrt(0.7 + 0.3j)
    for orthogonal in (False, True):
        ex = sp._ExactProduct(sp._Law(a, b, c, [0.8, 0.6], orthogonal), 3)
        x = 0.3 * (rng.standard_normal(12) + 1j * rng.standard_normal(12)) + 0.2j
        _, Jm = ex._residual_jacobian(w, x, True)
        fd = np.empty_like(Jm)
        for i in range(x.size):
            dx = np.zeros_like(x)
            dx[i] = 1e-6
            f_plus = ex._residual_jacobian(w, x + dx, False)[0]
            fd[:, i] = (f_plus - ex._residual_jacobian(w, x - dx, False)[0]) / 2e-6
        assert np.max(np.abs(Jm - fd)) < 1e-7 * np.max(np.abs(Jm))


# ------------------------------------------------------------------------------------------------------
# Large population and input checks
# ------------------------------------------------------------------------------------------------------
def test_one_step_large_population():
    """A 4000-unit K = 2 law on a 400-point grid: every point solved, the mass accounted for (timings are
    measured elsewhere, never asserted here)."""
    a, b, c, sigma = law_and_sigma("k2", 4000, seed=15)
    u = np.linspace(1e-4, 1.0, 400)
    L = 30.0
    rho = sp.density(a, b, c, sigma, True, L * u**2)
    assert np.all(np.isfinite(rho))
    assert np.trapezoid(rho * 2 * L * u, u) == pytest.approx(1.0, abs=3e-3)


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
