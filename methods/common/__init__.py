"""What every method family shares: which modules a method adapts per model family
(``targets``), and the task's new modules that every method trains in full (``new_modules``).
No plugin lives here."""
