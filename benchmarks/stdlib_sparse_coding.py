"""sparsedsl.stdlib.sparse_coding against scikit-learn, and the claims of issue 15, in one run.

    python -m benchmarks.stdlib_sparse_coding [--quick]

Cases (peers timed in the same process, interleaved; ratio = peer time / sparsedsl time):
- omp: batched Cholesky OMP vs scikit-learn's orthogonal_mp (Gram precomputed) on 8×8 china.jpg patches;
- lasso: FISTA vs scikit-learn's sparse_encode(algorithm="lasso_cd") at the same alpha, with both objectives;
- china_dl: MiniBatchDictionaryLearning, 100 atoms, ours (OMP coding) vs scikit-learn's (LARS coding),
  fit time and held-out reconstruction error at equal sparsity (both dictionaries scored by
  scikit-learn's OMP at 5 nonzeros per patch), both at batch 256 and at batch 64;
- beyond_l1: nonzeros per patch at matched relative error for ista / hard / cel0 / lq on the learned dictionary;
- bsc_bars, orthogonal_stream, cospadi: the claims of the BSC, online orthogonal DL and CoSpaDi lines.
Writes benchmarks/results/stdlib-sparse-coding-cpu[-quick].json.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from .timing import fmt_time, interleaved, machine_info, write_json


def _patches(n, seed=0):
    from sklearn.datasets import load_sample_image
    from sklearn.feature_extraction.image import extract_patches_2d

    img = load_sample_image("china.jpg").mean(axis=2) / 255.0
    P = extract_patches_2d(img, (8, 8), max_patches=n, random_state=seed).reshape(-1, 64)
    P = P - P.mean(axis=1, keepdims=True)
    return P / np.maximum(P.std(axis=1, keepdims=True), 1e-8)


def _held_out_error(test, D, k):
    from sklearn.decomposition import sparse_encode

    C = sparse_encode(test, D, algorithm="omp", n_nonzero_coefs=k)
    return float(np.linalg.norm(test - C @ D) / np.linalg.norm(test))


def _random_dictionary(n_atoms, n_features, seed):
    D = np.random.default_rng(seed).standard_normal((n_atoms, n_features))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def omp_case(quick, reps):
    from sklearn.linear_model import orthogonal_mp_gram

    from sparsedsl.stdlib import sparse_coding as sc

    X = _patches(2000 if quick else 20000)
    D = _random_dictionary(100, 64, 0)
    k = 5

    def sk():
        return orthogonal_mp_gram(D @ D.T, D @ X.T, n_nonzero_coefs=k)

    def ours():
        return sc.omp(X, D, n_nonzero_coefs=k)

    with warnings.catch_warnings():  # mean-removed patches span 63 dims: both warn of linear dependence
        warnings.simplefilter("ignore")
        ours()
        same = bool(np.allclose(ours().todense(), sk().T, atol=1e-8))
        t = interleaved({"sparsedsl": ours, "scikit-learn": sk}, reps)
    return {"case": "omp", "what": f"OMP k={k}, {len(X)} china patches (64-d), random 100-atom dictionary",
            "sparsedsl_s": t["sparsedsl"]["median"], "scikit-learn_s": t["scikit-learn"]["median"],
            "ratio": t["scikit-learn"]["median"] / t["sparsedsl"]["median"], "equal_to_scikit_learn": same}


def lasso_case(quick, reps):
    from sklearn.decomposition import sparse_encode

    from sparsedsl.stdlib import sparse_coding as sc

    X = _patches(300 if quick else 1000, seed=1)
    D = _random_dictionary(100, 64, 1)
    alpha = 0.5

    def objective(C):
        return float(0.5 * ((X - C @ D) ** 2).sum() + alpha * np.abs(C).sum())

    def sk():
        return sparse_encode(X, D, algorithm="lasso_cd", alpha=alpha, max_iter=2000)

    def ours():
        return sc.fista(X, D, alpha=alpha, max_iter=2000, tol=1e-5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours()
        f_ours, f_sk = objective(ours().todense()), objective(sk())
        t = interleaved({"sparsedsl": ours, "scikit-learn": sk}, reps)
    return {"case": "lasso", "what": f"l1 codes alpha={alpha}, {len(X)} patches, 100 atoms: FISTA vs lasso_cd",
            "sparsedsl_s": t["sparsedsl"]["median"], "scikit-learn_s": t["scikit-learn"]["median"],
            "ratio": t["scikit-learn"]["median"] / t["sparsedsl"]["median"],
            "objective_sparsedsl": f_ours, "objective_scikit_learn": f_sk}


def china_dl_case(quick, reps):
    from sklearn.decomposition import MiniBatchDictionaryLearning as SkMiniBatch

    from sparsedsl.stdlib import sparse_coding as sc

    n_train, epochs, k = (3000, 1, 5) if quick else (20000, 3, 5)
    P = _patches(n_train + 2000, seed=2)
    train, test = P[:n_train], P[n_train:]
    runs = {}

    def fit_sk(bs=256):
        return SkMiniBatch(n_components=100, alpha=1.0, batch_size=bs, max_iter=epochs, random_state=0).fit(train)

    def fit_ours(e, bs=256):
        return sc.MiniBatchDictionaryLearning(100, n_nonzero_coefs=k, batch_size=bs, max_iter=e,
                                              random_state=0).fit(train)

    # Ours at 1x, 2x, 4x scikit-learn's epochs (batch 256, as scikit-learn's default): OMP-coded online updates
    # plateau above scikit-learn's error (0.5575 at 4x and at 12x). At batch 64, 3 epochs (four times the
    # dictionary updates) ours goes below it; scikit-learn at batch 64 is run too, so neither side gets a
    # setting the other lacks.
    ladder = (1, 2, 4)
    fit_ours(1)  # compile outside the timing (the disk cache keeps the kernels afterwards)
    fits = ([("scikit-learn", fit_sk), ("scikit-learn_batch64", lambda: fit_sk(64))]
            + [(f"sparsedsl_{m}x", lambda m=m: fit_ours(m * epochs)) for m in ladder]
            + [("sparsedsl_batch64", lambda: fit_ours(epochs, 64))])
    for _ in range(reps):  # interleaved
        for name, fn in fits:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                model = fn()
                dt = time.perf_counter() - t0
            runs.setdefault(name, {"times": [], "model": model})["times"].append(dt)
    out = {"case": "china_dl", "what": f"MiniBatchDictionaryLearning, 100 atoms, {n_train} 8x8 china.jpg patches, "
                                       f"scikit-learn {epochs} epochs (batch 256 and 64); ours at 1x/2x/4x those "
                                       f"epochs (batch 256) and at {epochs} epochs, batch 64; error = held-out "
                                       f"relative error with scikit-learn's OMP at {k} nonzeros"}
    for name, r in runs.items():
        out[f"{name}_s"] = float(np.median(r["times"]))
        out[f"{name}_error"] = _held_out_error(test, r["model"].components_, k)
        if not name.startswith("scikit-learn"):
            out[f"{name}_time_ratio"] = out["scikit-learn_s"] / out[f"{name}_s"]
    best_sk = min(out["scikit-learn_error"], out["scikit-learn_batch64_error"])
    ours = [f"sparsedsl_{m}x" for m in ladder] + ["sparsedsl_batch64"]
    match = [name for name in ours if out[f"{name}_error"] <= best_sk]
    out["first_matching"] = match[0] if match else None
    fastest_sk = min(out["scikit-learn_s"], out["scikit-learn_batch64_s"])
    out["claim_holds"] = bool(match) and out[f"{match[0]}_s"] <= fastest_sk
    out["_dictionary"] = runs["sparsedsl_1x"]["model"].components_
    out["_test"] = test
    return out


def beyond_l1_case(D, test, quick):
    from sparsedsl.stdlib import sparse_coding as sc

    X = test[: 100 if quick else 200]
    target = 0.5
    t0 = time.perf_counter()
    # the l1 codes (ISTA's problem) are solved by FISTA, which reaches the same minimiser in fewer steps
    nnz = {name: sc.nnz_at_error(X, D, method=m, target=target, max_iter=100)
           for name, m in (("l1", "fista"), ("hard", "hard"), ("cel0", "cel0"), ("lq", "lq"))}
    return {"case": "beyond_l1", "what": f"nonzeros per patch at relative error {target}, {len(X)} held-out "
                                         "patches, the learned 100-atom dictionary (l1 = ISTA's problem, "
                                         "solved by FISTA; hard = l0; lq with q=1/2)", "nnz_per_sample": nnz,
            "claim_holds": bool(nnz["l1"] > max(nnz["hard"], nnz["cel0"])), "wall_s": time.perf_counter() - t0}


def bsc_case(quick):
    from sparsedsl.stdlib import sparse_coding as sc

    n = 600 if quick else 2000
    rng = np.random.default_rng(0)
    B = np.zeros((10, 5, 5))
    for i in range(5):
        B[i, i, :] = 1
        B[5 + i, :, i] = 1
    B = B.reshape(10, 25)
    X = 1.0 * ((rng.random((n, 10)) < 0.2) @ B > 0) + 0.5 * rng.standard_normal((n, 25))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sc.BinarySparseCoding(10, max_iter=100, random_state=0).fit(X)
    dt = time.perf_counter() - t0
    W = m.components_ / np.linalg.norm(m.components_, axis=1, keepdims=True)
    found = int((((B / np.linalg.norm(B, axis=1, keepdims=True)) @ W.T).max(axis=1) > 0.9).sum())
    return {"case": "bsc_bars", "what": f"BSC-ET on {n} OR-bars 5x5 (pi 0.2, amplitude 1, sigma 0.5), H'=8, gamma=5",
            "bars_found": found, "sparsity": m.sparsity_, "noise": m.noise_,
            "sparsity_rel_err": abs(m.sparsity_ - 0.2) / 0.2, "noise_rel_err": abs(m.noise_ - 0.5) / 0.5,
            "iterations": m.n_iter_, "fit_s": dt}


def orthogonal_case(quick):
    from sparsedsl.stdlib import sparse_coding as sc

    n, batches, batch = 16, (20 if quick else 100), 1000
    D0, _ = np.linalg.qr(np.random.default_rng(42).standard_normal((n, n)))
    rng = np.random.default_rng(1)
    model = sc.OnlineOrthogonalDictionaryLearning(random_state=0)
    worst, t0 = 0.0, time.perf_counter()
    for _ in range(batches):
        model.partial_fit(((rng.random((batch, n)) < 0.1) * rng.standard_normal((batch, n))) @ D0)
        worst = max(worst, float(np.abs(model.components_ @ model.components_.T - np.eye(n)).max()))
    h = model.history_
    return {"case": "orthogonal_stream",
            "what": f"{batches * batch} streamed samples, n={n}, Bernoulli(0.1)-Gaussian codes",
            "max_orthogonality_error": worst, "objective_first": h[0], "objective_last10_mean": float(np.mean(h[-10:])),
            "atoms_recovered": int((np.abs(model.components_ @ D0.T).max(axis=1) > 0.95).sum()),
            "wall_s": time.perf_counter() - t0}


def cospadi_case(quick):
    from sparsedsl.stdlib import sparse_coding as sc

    d = 64 if quick else 128
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((d, 3 * d // 8))
    coef = np.zeros((atoms.shape[1], d))
    for j in range(d):
        coef[rng.choice(atoms.shape[1], 3, replace=False), j] = rng.standard_normal(3)
    W = atoms @ coef + 0.05 * rng.standard_normal((d, d))
    X = rng.standard_normal((8 * d, d)) @ np.diag(np.linspace(0.2, 3, d)) @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    out = {"case": "cospadi", "what": f"W {d}x{d} = sparse combinations of {atoms.shape[1]} atoms + noise, "
                                      f"{8 * d} calibration rows; relative output error ||XW - XW'||/||XW||"}
    for comp in (0.3, 0.5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, info = sc.cospadi(W, X, compression=comp, random_state=0)
        _, _, ref = sc.data_aware_svd(W, X, compression=comp)
        out[f"{int(comp * 100)}%"] = {"cospadi": info, "data_aware_svd": ref}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    cases = []
    t_all = time.perf_counter()
    for fn in (omp_case, lasso_case):
        c = fn(args.quick, reps)
        cases.append(c)
        print(f"{c['case']}: {c['what']}: sparsedsl {fmt_time(c['sparsedsl_s'])}, scikit-learn "
              f"{fmt_time(c['scikit-learn_s'])}, ratio {c['ratio']:.2f}x", {k: v for k, v in c.items()
                                                                            if k.startswith(("equal", "objective"))})
    dl = china_dl_case(args.quick, 1)  # fits of seconds to a minute: one interleaved round
    D, test = dl.pop("_dictionary"), dl.pop("_test")
    cases.append(dl)
    print(f"china_dl: {dl['what']}")
    print(f"  scikit-learn {fmt_time(dl['scikit-learn_s'])} error {dl['scikit-learn_error']:.4f}; batch 64: "
          f"{fmt_time(dl['scikit-learn_batch64_s'])} error {dl['scikit-learn_batch64_error']:.4f}")
    for m in (1, 2, 4):
        print(f"  sparsedsl {m}x epochs {fmt_time(dl[f'sparsedsl_{m}x_s'])} error {dl[f'sparsedsl_{m}x_error']:.4f} "
              f"(time ratio {dl[f'sparsedsl_{m}x_time_ratio']:.2f}x)")
    print(f"  sparsedsl batch 64 {fmt_time(dl['sparsedsl_batch64_s'])} error {dl['sparsedsl_batch64_error']:.4f} "
          f"(time ratio {dl['sparsedsl_batch64_time_ratio']:.2f}x)")
    print(f"  first matching scikit-learn's error: {dl['first_matching']}; claim holds: {dl['claim_holds']}")
    c = beyond_l1_case(D, test, args.quick)
    cases.append(c)
    print(f"beyond_l1: {c['what']}: {c['nnz_per_sample']} claim holds: {c['claim_holds']}")
    for fn in (bsc_case, orthogonal_case, cospadi_case):
        c = fn(args.quick)
        cases.append(c)
        print(f"{c['case']}: {c}")
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   "stdlib-sparse-coding-cpu" + ("-quick" if args.quick else "") + ".json")
    import sklearn

    write_json(out, {"machine": machine_info({"scikit-learn": sklearn.__version__}), "cases": cases,
                     "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                     "wall_s": time.perf_counter() - t_all})
    print(f"wrote {out} ({time.perf_counter() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
