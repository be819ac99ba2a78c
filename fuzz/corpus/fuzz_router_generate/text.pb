
r1млL?(33s?(B
Bworld"Hello, world! It's a test.(