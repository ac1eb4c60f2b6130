"""Chapter 6: fine-tuning GPT-2 as a text classifier."""
