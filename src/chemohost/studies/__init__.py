"""In-silico trial endpoints and survival (RECIST 1.1, CTCAE, dose intensity, tumour-linked OS)."""
