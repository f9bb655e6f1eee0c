#include <stdio.h>
int main(void) { long best = 0; for (long a = 100; a < 1000; a++) for (long b = a; b < 1000; b++) { long p = a * b, r = 0, x = p; while (x) { r = r * 10 + x % 10; x /= 10; } if (r == p && p > best) best = p; } printf("%ld\n", best); return 0; }
