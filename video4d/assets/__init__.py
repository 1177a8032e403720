"""Package data: the tiny text tokenizer's word list (tiny_words.txt)."""
