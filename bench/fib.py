"""Windmill's benchmark function, importable by the PythonFunction task."""


def fibo(n: int) -> int:
    """The naive recursive Fibonacci, deliberately CPU-bound."""
    return n if n < 2 else fibo(n - 1) + fibo(n - 2)
