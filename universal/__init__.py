"""Universal two-tower recommender over a JSON data format. Filled by a later issue."""
