#include <stdio.h>
static unsigned long isqrt(unsigned long n) { unsigned long x = n, y = (x + 1) / 2; while (y < x) { x = y; y = (x + n / x) / 2; } return x; }
int main(void) { unsigned long s = 0; for (unsigned long n = 1; n < 100000; n += 13) s += isqrt(n * 1000003ul); printf("%lu\n", s); return 0; }
