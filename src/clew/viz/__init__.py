"""Views of run directories (torch-free): curve plots, and `clew view`: a browser view of runs, groups and credit."""
