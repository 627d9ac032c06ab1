"""Building blocks of M&N (Yeung et al. 2025): slicing between the 3D and 2D models, losses, schedules."""
