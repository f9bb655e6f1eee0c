#include <stdio.h>
int main(void) { long a = 1, b = 2, s = 0; while (a <= 4000000) { if (a % 2 == 0) s += a; long t = a + b; a = b; b = t; } printf("%ld\n", s); return 0; }
