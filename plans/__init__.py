"""M&N experiment planning (nnunetv2_mn.plans)."""
