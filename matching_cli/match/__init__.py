"""`matching match`: blocking, clustering, the job, its files and quality."""
