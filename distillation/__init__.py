"""Knowledge distillation of LLM user profiles into SASRec / BERT4Rec. Filled by a later issue."""
