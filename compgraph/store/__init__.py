"""Graph stores behind one interface (see base.GraphStore)."""
