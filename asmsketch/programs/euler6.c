#include <stdio.h>
int main(void) { long sq = 0, s = 0; for (long i = 1; i <= 100; i++) { sq += i * i; s += i; } printf("%ld\n", s * s - sq); return 0; }
