"""The job kinds, run inside the job process (``maas.jobs.child``): each takes the
payload and a ``Reporter`` and returns what it made; none touches the database."""
