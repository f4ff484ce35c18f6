"""evaluate stage: retrieval metrics today; RAGAS reports arrive with their own issue."""
