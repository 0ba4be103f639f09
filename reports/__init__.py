"""HTML leaderboards: jinja2 templates, matplotlib figures, the static site renderer."""
