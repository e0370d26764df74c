"""Forget sets, analogous pools, and the offline data mirror."""
