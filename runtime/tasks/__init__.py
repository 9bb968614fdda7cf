"""Core task plugins: the runnable tasks Kestra ships in its core."""
