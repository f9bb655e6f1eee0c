#include <stdio.h>
int main(void) { unsigned long a = 0, b = 1; for (int i = 0; i < 90; i++) { unsigned long t = a + b; a = b; b = t; if (i % 15 == 0) printf("%lu\n", a); } return 0; }
