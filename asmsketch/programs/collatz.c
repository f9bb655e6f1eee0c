#include <stdio.h>
int main(void) { int best = 0, arg = 0; for (long n = 1; n < 20000; n++) { long x = n; int s = 0; while (x != 1) { x = (x & 1) ? 3 * x + 1 : x / 2; s++; } if (s > best) { best = s; arg = (int)n; } } printf("%d %d\n", arg, best); return 0; }
