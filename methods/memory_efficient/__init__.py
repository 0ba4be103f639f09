"""Full-parameter fine-tuning in less memory: GaLore (low-rank optimizer states, through the
optimizer seam), LISA (a few sampled blocks train at a time), MeZO and Sparse MeZO
(zeroth-order steps from two forward passes)."""
