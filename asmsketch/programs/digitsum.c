#include <stdio.h>
int main(void) { long total = 0; for (long n = 1; n <= 100000; n++) { long x = n, d = 0; while (x) { d += x % 10; x /= 10; } total += d; } printf("%ld\n", total); return 0; }
