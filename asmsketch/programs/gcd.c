#include <stdio.h>
static long gcd(long a, long b) { while (b) { long t = a % b; a = b; b = t; } return a; }
int main(void) { long s = 0; for (long i = 1; i < 200; i++) s += gcd(i * 37, 1071); printf("%ld\n", s); return 0; }
