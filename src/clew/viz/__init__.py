"""Views of run directories (torch-free): plots now, a browser view later."""
