By0JSðÉk§‹H&
dI2uIªá@Iõ¿H‹L{È