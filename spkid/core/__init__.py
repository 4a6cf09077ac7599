"""Plumbing every stage shares; imports nothing else of spkid.

    errors       the errors a user can act on (one line, exit status 2)
    params       the params.yaml schema, defaults and validation
    recipes      named configurations as params overrides (`spkid recipe`)
    atomic       write to a temporary sibling, then rename; clean up after dead writers
    lock         one stage at a time in a repository
    memory       glibc's mmap threshold and kept free pages, for flat memory
    seeding      random streams named by what they are for
    provenance   the digest of the source that computes a stored result
    install      imports that fail for install reasons, with the fix
    device       CPU or CUDA, and the mixed precision used there
    distributed  the process group under torchrun (a no-op for one process)
    roles        the roles of an evaluation report (val, test, verify, verify_<list>)
"""
