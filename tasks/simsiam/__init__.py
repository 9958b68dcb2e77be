"""SimSiam self-supervised backbone pretraining (seed 000), for CenterNet's backbone."""
