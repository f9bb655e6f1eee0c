#include <stdio.h>
static unsigned long pm(unsigned long b, unsigned long e, unsigned long m) { unsigned long r = 1; b %= m; while (e) { if (e & 1) r = r * b % m; b = b * b % m; e >>= 1; } return r; }
int main(void) { unsigned long s = 0; for (unsigned long i = 2; i < 300; i++) s += pm(i, 1000000 + i, 1000003ul); printf("%lu\n", s); return 0; }
