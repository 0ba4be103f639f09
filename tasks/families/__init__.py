"""Task family bases: what the tasks of one kind share, so a new task is data loading and little else.

- ``text_classification``: sentence (pair) classification or regression with a fresh head
  (GLUE, smoke).
- ``image_classification``: a vision backbone with a fresh head and its own image processor,
  and VTAB-1k's protocol (VTAB, image folders).
- ``answer_generation``: a causal LM fine-tuned on prompt/answer pairs, loss on the answer
  tokens, scored by greedy generation (GSM8K).
- ``lm_loss``: a causal LM trained on streamed text packed into blocks, scored by held-out
  loss and perplexity (the pretraining tasks).

Each base gets its model from ``suite.models.loading`` and says what the task added to it.
No base registers a task.
"""
