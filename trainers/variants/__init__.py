"""Trainer variants, nnU-Net style: a few class attributes each (`mn_variants`: M&N's ablations and choices;
`schedules`: shorter schedules for tests, demos and CPUs)."""
