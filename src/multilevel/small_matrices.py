"""Stacks of small matrices held "structure of arrays": shape (a, b, J), the stack index last.

numpy's matmul, cholesky and solve treat a (J, a, b) stack matrix by matrix, with a fixed cost per
matrix that dominates when the matrices are 2 x 2 and J is 10^5. With the stack index last and
contiguous, every step below is an elementwise operation on J-long vectors, or one BLAS product,
so the cost per unit is a handful of floating-point operations.
"""
from __future__ import annotations

import numpy as np


def _stack(A: np.ndarray) -> np.ndarray:
    """A constant (a, b) matrix as an (a, b, 1) stack."""
    return A[:, :, None] if A.ndim == 2 else A


def matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B per unit: (a, k, J) @ (k, b, J) -> (a, b, J); either may be a constant (a, k) matrix."""
    A, B = _stack(A), _stack(B)
    out = A[:, 0:1, :] * B[0:1, :, :]
    for i in range(1, A.shape[1]):
        out += A[:, i : i + 1, :] * B[i : i + 1, :, :]
    return out


def cholesky(M: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of positive definite (q, q, J) matrices."""
    q = M.shape[0]
    L = np.zeros_like(M)
    for j in range(q):
        d = M[j, j] - np.sum(L[j, :j] ** 2, axis=0)
        if np.any(d <= 0):
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        L[j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            L[i, j] = (M[i, j] - np.sum(L[i, :j] * L[j, :j], axis=0)) / L[j, j]
    return L


def solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """L^-1 B per unit, L lower triangular (q, q, J), B (q, r, J) or a constant (q, r)."""
    q, J = L.shape[0], L.shape[2]
    B = np.broadcast_to(_stack(B), (q, B.shape[1], J))
    X = np.empty(B.shape)
    for i in range(q):
        acc = B[i].copy()
        for k in range(i):
            acc -= L[i, k][None, :] * X[k]
        X[i] = acc / L[i, i][None, :]
    return X
