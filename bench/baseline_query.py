"""The model card's plain approach to one query, for comparison (issue 3).

Imports sentence-transformers, loads the model, encodes the query, loads the
.npy with np.load and takes one dot product. Usage:
    python bench/baseline_query.py MODEL_FOLDER EMBEDDINGS_NPY "query text"
"""

import sys

import numpy as np
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
q = model.encode([sys.argv[3]], normalize_embeddings=True)[0]
emb = np.load(sys.argv[2])
scores = emb @ q
top = np.argsort(-scores)[:10]
for i in top:
    print(int(i), float(scores[i]))
