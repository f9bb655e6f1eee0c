#include <stdio.h>
int main(void) { long s = 0; for (long i = 1; i < 1000; i++) if (i % 3 == 0 || i % 5 == 0) s += i; printf("%ld\n", s); return 0; }
