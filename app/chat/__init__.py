"""Chat: conversations, prompt building, streaming answers from `serving`, citations."""
