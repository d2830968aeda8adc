"""Operations shared by every floor: Prometheus metrics, structured logs, thread counts and the CPU budget.

Imports nothing of ``app``'s other packages.
"""
