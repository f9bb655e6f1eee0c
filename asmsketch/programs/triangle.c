#include <stdio.h>
static int divisors(long n) { int c = 0; for (long d = 1; d * d <= n; d++) if (n % d == 0) c += (d * d == n) ? 1 : 2; return c; }
int main(void) { long t = 0; for (long i = 1;; i++) { t += i; if (divisors(t) > 100) { printf("%ld\n", t); return 0; } } }
