"""The small trained VLM that pruning is measured on: its question-answer data and its training script."""
