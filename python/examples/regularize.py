"""specgrad example: spectral regularizers on a weight batch, and an Adam-NSCL-style nullspace update.

    SPECGRAD_LIB=build/libspecgrad.so python python/examples/regularize.py [--quick]

Part 1 trains 8 linear layers (a 8×16×16 weight batch) on a regression task with a spectral-norm
(σmax²) and an orthogonality (||WᵀW − I||²) penalty, loss and gradient from specgrad.regularizer, plain
gradient descent (and the same with torch autograd when torch is installed).
Part 2 learns task 1, then learns task 2 with Adam-NSCL: Adam's moment estimates come from the task-2
gradient, and the Adam step m̂/(√v̂ + ε) is projected onto the nullspace of task 1's feature covariance
(specgrad.project) before it is applied, so task 1's outputs do not move.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import specgrad as sg  # noqa: E402

QUICK = "--quick" in sys.argv
rng = np.random.default_rng(0)


def part1_numpy(steps):
    L, d, N = 8, 16, 64
    W = rng.standard_normal((L, d, d)) * 0.6                # σmax ≈ 4.5 at init
    X = rng.standard_normal((L, N, d))
    T = X @ np.linalg.qr(rng.standard_normal((L, d, d)))[0]  # targets from orthogonal maps
    lam_spec, lam_orth, lr = 1e-2, 5e-2, 2e-2
    print(f"part 1: {L} layers {d}x{d}, task + {lam_spec}*spectral + {lam_orth}*ortho, gradient descent")
    for step in range(steps + 1):
        R = X @ W - T
        task = np.sum(R ** 2, axis=(-1, -2)) / N               # per layer
        g_task = 2 * X.swapaxes(-1, -2) @ R / N
        spec, g_spec = sg.regularizer(W, "spectral")           # σmax², 2σ u vᵀ
        orth, g_orth = sg.regularizer(W, "ortho")              # ||WᵀW − I||², 4W(WᵀW − I)
        total = task + lam_spec * spec + lam_orth * orth
        if step % (steps // 5) == 0:
            print(f"  step {step:4d}  loss {total.sum():9.4f}  task {task.sum():8.4f}  "
                  f"max sigma {np.sqrt(spec.max()):6.3f}  ortho {orth.sum():8.4f}")
        W -= lr * (g_task + lam_spec * g_spec + lam_orth * g_orth)
    s = sg.svdvals(W)
    print(f"  singular values after training: min {s.min():.3f} max {s.max():.3f} (orthogonal targets: 1)")
    return total.sum()


def part1_torch(steps):
    try:
        import torch
    except ImportError:
        print("part 1 (torch): skipped, torch not installed")
        return
    import specgrad.autograd as sga

    L, d, N = 8, 16, 64
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(L, d, d, generator=g, dtype=torch.float64) * 0.6).requires_grad_(True)
    X = torch.randn(L, N, d, generator=g, dtype=torch.float64)
    T = X @ torch.linalg.qr(torch.randn(L, d, d, generator=g, dtype=torch.float64))[0]
    opt = torch.optim.SGD([W], lr=2e-2)
    print("part 1 (torch autograd through specgrad.autograd.Regularizer):")
    for step in range(steps + 1):
        opt.zero_grad()
        task = ((X @ W - T) ** 2).sum() / N
        loss = task + 1e-2 * sga.regularizer(W, "spectral").sum() + 5e-2 * sga.regularizer(W, "ortho").sum()
        loss.backward()
        opt.step()
        if step % (steps // 5) == 0:
            print(f"  step {step:4d}  loss {loss.item():9.4f}  task {task.item():8.4f}")


def part2(steps):
    d, k_out, r = 24, 6, 10                     # task-1 features live in an r-dim subspace of R^d
    B1 = rng.standard_normal((r, d))
    X1 = rng.standard_normal((200, r)) @ B1     # (N1, d), rank r
    X2 = rng.standard_normal((200, d))          # task 2: generic inputs
    W1true, W2true = rng.standard_normal((k_out, d)), rng.standard_normal((k_out, d))
    Y1, Y2 = X1 @ W1true.T, X2 @ W2true.T
    W = sg.lstsq(X1, Y1).T                      # learn task 1 (minimum-norm least squares)
    out1 = X1 @ W.T
    print(f"part 2: task 1 fit residual {np.linalg.norm(out1 - Y1):.2e}")

    # Adam-NSCL: nullspace of the feature covariance, eigenvalues <= a * λmax (a = 1e-10 here; the
    # paper keeps λ <= a·λmin of a full-rank covariance). Cross-check with specgrad.null_space on X1.
    C = X1.T @ X1 / len(X1)
    lam, Q = sg.eigh(C)
    U0 = Q[:, lam <= 1e-10 * lam.max()]
    N, nullity = sg.null_space(X1)
    P_eig, P_ns = U0 @ U0.T, N[:, :nullity] @ N[:, :nullity].T
    print(f"  covariance nullspace: dim {U0.shape[1]} (eigh), {int(nullity)} (null_space), "
          f"projector difference {np.linalg.norm(P_eig - P_ns):.1e}")

    # the best task-2 loss reachable without touching task 1 (lstsq over the nullspace coordinates)
    N0 = N[:, :nullity]
    Z = sg.lstsq(X2 @ N0, Y2 - X2 @ W.T)
    best = np.sum((X2 @ (W + (N0 @ Z).T).T - Y2) ** 2) / len(X2)
    print(f"  best task-2 loss inside the nullspace (lstsq): {best:.4f}")
    # Adam-NSCL: Adam's update (moments of the unprojected gradient), projected onto null(C) with the same
    # threshold as above (rtol is relative to σmax(C) = λmax). A projected Adam step is not steepest
    # descent inside the nullspace: the loss settles above the lstsq optimum printed above (and with a
    # constant step creeps back up), hence Adam's decaying step size α/√t.
    alpha, beta1, beta2, eps = 0.1, 0.9, 0.999, 1e-8
    M, V = np.zeros_like(W), np.zeros_like(W)   # first and second moment estimates
    for step in range(steps + 1):
        R2 = X2 @ W.T - Y2
        loss2 = np.sum(R2 ** 2) / len(X2)
        if step % (steps // 5) == 0:
            drift = np.linalg.norm(X1 @ W.T - out1) / np.linalg.norm(out1)
            print(f"  step {step:4d}  task-2 loss {loss2:10.4f}  task-1 output drift {drift:.1e}")
        G = 2 * R2.T @ X2 / len(X2)             # dL2/dW (k_out × d)
        M = beta1 * M + (1 - beta1) * G
        V = beta2 * V + (1 - beta2) * G ** 2
        t = step + 1
        D = (M / (1 - beta1 ** t)) / (np.sqrt(V / (1 - beta2 ** t)) + eps)  # the Adam step
        Dp = sg.project(C, D.T, "null", rtol=1e-10).T  # rows of the step in null(C): X1 ΔWᵀ = 0
        W = W - alpha / np.sqrt(t) * Dp
    unconstrained = W - alpha / np.sqrt(t) * D
    print(f"  (an unprojected Adam step would move task-1 outputs by "
          f"{np.linalg.norm(X1 @ unconstrained.T - out1) / np.linalg.norm(out1):.1e})")
    return loss2, np.linalg.norm(X1 @ W.T - out1) / np.linalg.norm(out1)


if __name__ == "__main__":
    t0 = time.time()
    steps = 100 if QUICK else 400
    final = part1_numpy(steps)
    part1_torch(steps)
    loss2, drift = part2(50 if QUICK else 200)
    print(f"done in {time.time() - t0:.1f} s")
    assert np.isfinite(final) and drift < 1e-8, "task-1 outputs must stay unchanged"
